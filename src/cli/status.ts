/**
 * `qwen-edge status [--device ID] [--json]`: a dashboard in a terminal. Subscribes to the retained
 * `{base}/+/status`, `+/info` and `+/health`, asks the devices for a health snapshot now
 * (`{base}/fleet/health/refresh`, or the one device's), waits until the running devices have sent
 * one (at most 3 s) and prints one device in detail or a table of every device. A device that does
 * not answer (stopped, or an older version) shows its last retained snapshot, with its age.
 */
import {randomBytes} from "node:crypto";
import mqtt, {type IClientOptions} from "mqtt";
import {loadConfig, type QwenEdgeConfig} from "../config.js";
import {ConfigError} from "../errors.js";
import {brokerAuth, readBrokerSecrets} from "../mqtt/credentials.js";
import {topicLayout} from "../mqtt/topics.js";
import {splitArgs} from "./args.js";
import {EXIT} from "./exit.js";

interface DeviceView {
    device: string;
    status: Record<string, unknown> | null;
    info: Record<string, unknown> | null;
    health: Record<string, unknown> | null;
}

/** Retained messages arrive right after SUBACK; this much silence means the broker has sent them all. */
const QUIET_MS = 400;
/** How long to wait for the running devices' fresh health snapshots. */
const FRESH_WAIT_MS = 3000;

/** Client options for the CLI's own short connections, with the daemon's credentials and TLS files. */
export function cliClientOptions(config: QwenEdgeConfig, role: string): IClientOptions {
    const m = config.mqtt;
    const secrets = readBrokerSecrets(m);
    return {
        protocolVersion: 5, clean: true, reconnectPeriod: 0, connectTimeout: 10_000,
        clientId: `qwen-edge-${role}-${randomBytes(6).toString("hex")}`,
        ...brokerAuth(m.username, secrets),
        rejectUnauthorized: true
    };
}

export async function statusCommand(args: string[]): Promise<number> {
    const {flags, positional, config: configArgs} = splitArgs(args, {values: ["device", "wait"], booleans: ["json"]});
    if (positional.length > 0) throw new ConfigError(`status takes no positional arguments (got "${positional[0]}"); use --device ID`);
    const config = loadConfig({args: configArgs});
    const waitMs = typeof flags.wait === "string" ? Number(flags.wait) * 1000 : 5000;
    if (!Number.isFinite(waitMs) || waitMs <= 0) throw new ConfigError("--wait is in seconds and must be positive");
    const device = typeof flags.device === "string" ? flags.device : null;
    const views = await collect(config, device, waitMs);
    const list = [...views.values()].filter((v) => v.status !== null || v.info !== null || v.health !== null)
        .sort((a, b) => a.device.localeCompare(b.device));
    if (device !== null) {
        const view = list.find((v) => v.device === device);
        if (!view || view.status === null) {
            process.stderr.write(`no status for device "${device}" under ${config.mqtt.baseTopic}/ within ${waitMs / 1000} s (has it ever connected to ${config.mqtt.url}?)\n`);
            return EXIT.timeout;
        }
        process.stdout.write(flags.json === true ? JSON.stringify(view, null, 2) + "\n" : renderDevice(view));
        return EXIT.ok;
    }
    if (list.length === 0) {
        process.stderr.write(`no devices found under ${config.mqtt.baseTopic}/+/status within ${waitMs / 1000} s\n`);
        return EXIT.timeout;
    }
    process.stdout.write(flags.json === true ? JSON.stringify({devices: list}, null, 2) + "\n" : renderTable(list));
    return EXIT.ok;
}

async function collect(config: QwenEdgeConfig, device: string | null, waitMs: number): Promise<Map<string, DeviceView>> {
    const base = config.mqtt.baseTopic;
    const level = device ?? "+";
    const kinds = ["status", "info", "health"] as const;
    const views = new Map<string, DeviceView>();
    /** devices whose health arrived live, after we asked (a retained copy comes with the retain flag) */
    const fresh = new Set<string>();
    const layout = topicLayout(base, device ?? config.device.id, "");
    const client = await mqtt.connectAsync(config.mqtt.url, cliClientOptions(config, "status"));
    try {
        let lastMessageAt = Date.now();
        client.on("message", (topic, payload, packet) => {
            lastMessageAt = Date.now();
            const rest = topic.startsWith(`${base}/`) ? topic.slice(base.length + 1).split("/") : [];
            const [id, kind] = rest;
            if (rest.length !== 2 || id === undefined || !kinds.includes(kind as typeof kinds[number])) return;
            const view = views.get(id) ?? {device: id, status: null, info: null, health: null};
            views.set(id, view);
            view[kind as typeof kinds[number]] = parseObject(payload);
            if (kind === "health" && !packet.retain) fresh.add(id);
        });
        await client.subscribeAsync(kinds.map((k) => `${base}/${level}/${k}`), {qos: 1});
        // The retained health can be up to telemetry.intervalSeconds old: ask for a snapshot now.
        await client.publishAsync(device !== null ? layout.healthRefresh : layout.fleetHealthRefresh, "", {qos: 0});
        const started = Date.now();
        const running = (v: DeviceView): boolean => v.status !== null && v.status.state !== "offline";
        await new Promise<void>((resolve) => {
            const check = (): void => {
                const now = Date.now();
                const settled = views.size > 0 && now - lastMessageAt >= QUIET_MS;
                const allFresh = [...views.values()].every((v) => !running(v) || fresh.has(v.device));
                if (now >= started + waitMs || (settled && (allFresh || now >= started + FRESH_WAIT_MS))) resolve();
                else setTimeout(check, 50);
            };
            setTimeout(check, QUIET_MS);
        });
    } finally {
        await client.endAsync();
    }
    return views;
}

function parseObject(payload: Buffer): Record<string, unknown> | null {
    if (payload.length === 0) return null; // a cleared retained message
    try {
        const value: unknown = JSON.parse(payload.toString("utf8"));
        return typeof value === "object" && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : null;
    } catch {
        return null;
    }
}

function get(obj: unknown, path: string): unknown {
    let value: unknown = obj;
    for (const key of path.split(".")) value = typeof value === "object" && value !== null ? (value as Record<string, unknown>)[key] : undefined;
    return value;
}

function str(obj: unknown, path: string, fallback: string): string {
    const value = get(obj, path);
    return typeof value === "string" || typeof value === "number" ? String(value) : fallback;
}

function num(value: unknown, digits = 0, unit = ""): string {
    return typeof value === "number" && Number.isFinite(value) ? `${value.toFixed(digits)}${unit}` : "-";
}

function bytes(value: unknown): string {
    if (typeof value !== "number" || !Number.isFinite(value)) return "-";
    return value >= 1024 ** 3 ? `${(value / 1024 ** 3).toFixed(1)} GiB` : `${Math.round(value / 1024 ** 2)} MiB`;
}

function age(iso: unknown): string {
    if (typeof iso !== "string") return "-";
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (!Number.isFinite(seconds)) return "-";
    return seconds < 120 ? `${seconds}s` : seconds < 7200 ? `${Math.round(seconds / 60)}m` : `${Math.round(seconds / 3600)}h`;
}

function throttled(view: DeviceView): string {
    const t = get(view.health, "cpu.throttling");
    if (t === null || t === undefined) return "-";
    if (get(t, "now.any") === true) return "now";
    return get(t, "sinceBoot.any") === true ? "earlier" : "no";
}

function renderTable(list: DeviceView[]): string {
    const header = ["DEVICE", "STATE", "FOR", "MODEL", "TEMP", "THROTTLED", "TOK/S", "QUEUE", "MEM AVAIL", "HEALTH AGE", "REASON"];
    const rows = list.map((v) => [
        v.device, str(v.status, "state", "-"), age(get(v.status, "since")),
        str(v.info, "model.name", str(v.health, "inference.model", "-")),
        num(get(v.health, "cpu.temperatureC"), 1, "°C"), throttled(v), num(get(v.health, "inference.tokensPerSecond.recent"), 1),
        num(get(v.health, "inference.queued")), bytes(get(v.health, "memory.availableBytes")), age(get(v.health, "at")),
        str(v.status, "reason", "")
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
    const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ").trimEnd();
    return [line(header), ...rows.map(line)].join("\n") + "\n";
}

function renderDevice(v: DeviceView): string {
    const h = v.health;
    const lines = [
        `device      ${v.device}`,
        `state       ${str(v.status, "state", "-")} for ${age(get(v.status, "since"))}${get(v.status, "reason") ? ` (${str(v.status, "reason", "")})` : ""}`,
        `model       ${str(v.info, "model.name", "-")} (${str(v.info, "model.state", "?")}), qwen-edge ${str(v.info, "versions.qwenEdge", "?")}, node-llama-cpp ${str(v.info, "versions.nodeLlamaCpp", "?")}`,
        `board       ${str(v.info, "deviceFacts.board", "-")} (${str(v.info, "deviceFacts.arch", "?")}, ${num(get(v.info, "deviceFacts.cpu.cores"))} CPUs)`
    ];
    if (h === null) {
        lines.push("health      none received (it is published every telemetry.intervalSeconds)");
    } else {
        lines.push(
            `health      ${age(get(h, "at"))} old, up ${num(get(h, "uptimeSeconds"))} s`,
            `cpu         load ${num(get(h, "cpu.load1"), 2)}, usage ${num(get(h, "cpu.usagePercent"), 1, " %")}, temperature ${num(get(h, "cpu.temperatureC"), 1, " °C")}, throttled ${throttled(v)}`,
            `memory      ${bytes(get(h, "memory.availableBytes"))} available of ${bytes(get(h, "memory.totalBytes"))}, budget ${bytes(get(h, "memory.budgetBytes"))}, rss ${bytes(get(h, "memory.processRssBytes"))}, cgroup limit ${bytes(get(h, "memory.cgroupLimitBytes"))}`,
            `disk        ${bytes(get(h, "disk.freeBytes"))} free at ${str(h, "disk.path", "-")}`,
            `inference   ${num(get(h, "inference.queued"))} queued, ${num(get(h, "inference.running"))} running, ${num(get(h, "inference.completed"))} completed, ${num(get(h, "inference.failed"))} failed, ${num(get(h, "inference.rejected"))} rejected`,
            `speed       ${num(get(h, "inference.tokensPerSecond.recent"), 1)} tok/s recently, ${num(get(h, "inference.tokensPerSecond.last"), 1)} last, ${num(get(h, "inference.tokensPerSecond.average"), 1)} average; TTFT p50 ${num(get(h, "inference.ttftMs.p50"), 0, " ms")}, p95 ${num(get(h, "inference.ttftMs.p95"), 0, " ms")}`,
            `mqtt        ${get(h, "mqtt.connected") === true ? "connected" : "disconnected"}, ${num(get(h, "mqtt.reconnects"))} reconnects`
        );
    }
    return lines.join("\n") + "\n";
}
