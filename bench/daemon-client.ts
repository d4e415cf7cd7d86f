/**
 * The daemon side of the benchmark: the built daemon as a child process (so node flags such as
 * --cpu-prof can be passed) and MQTT clients that time requests the way a user's client sees them.
 */
import {spawn, type ChildProcess} from "node:child_process";
import {closeSync, mkdtempSync, openSync, readFileSync, rmSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {performance} from "node:perf_hooks";
import {fileURLToPath} from "node:url";
import mqtt, {type MqttClient} from "mqtt";
import {withTimeout} from "../src/util/timeout.js";

const MAIN = fileURLToPath(new URL("../src/launcher.cjs", import.meta.url));

export interface DaemonLaunch {
    brokerUrl: string;
    modelPath: string;
    deviceId: string;
    /** CLI arguments after `run` */
    args: string[];
    /** node flags before the script, e.g. --cpu-prof */
    nodeFlags: string[];
}

export class BenchDaemon {
    public readonly layout: {request: string; status: string};
    private child: ChildProcess | null = null;
    private readonly dir: string;
    private exited: Promise<number | null> = Promise.resolve(null);
    private spawnedAt = 0;

    public constructor(private readonly launch: DaemonLaunch) {
        this.dir = mkdtempSync(join(tmpdir(), "qe-bench-daemon-"));
        this.layout = {request: `qwen-edge/${launch.deviceId}/request`, status: `qwen-edge/${launch.deviceId}/status`};
    }

    public get pid(): number {
        if (this.child?.pid === undefined) throw new Error("daemon not running");
        return this.child.pid;
    }

    public get logPath(): string {
        return join(this.dir, "daemon.log");
    }

    /**
     * Spawns the daemon and resolves with the milliseconds from spawn to the retained `online`
     * status as a subscriber sees it (the device id is fresh, so no older retained message answers).
     */
    public async start(timeoutMs = 60_000): Promise<number> {
        const l = this.launch;
        const watcher = await mqtt.connectAsync(l.brokerUrl, {protocolVersion: 5, clean: true, reconnectPeriod: 0,
            clientId: `bench-watch-${Math.random().toString(16).slice(2)}`});
        try {
            let resolveOnline: (at: number) => void = () => undefined;
            const online = new Promise<number>((resolve) => { resolveOnline = resolve; });
            watcher.on("message", (_topic, payload) => {
                if (parseJson(payload)?.state === "online") resolveOnline(performance.now());
            });
            await watcher.subscribeAsync(this.layout.status, {qos: 1});
            // The daemon's JSON log goes to a file: a pipe would have to be drained by this process.
            const log = openSync(this.logPath, "a");
            const args = [...l.nodeFlags, MAIN, "run", "--mqtt-url", l.brokerUrl, "--model-path", l.modelPath, "--device-id", l.deviceId,
                "--state-dir", join(this.dir, "state"), ...l.args];
            const started = performance.now();
            this.spawnedAt = Date.now();
            const child = spawn(process.execPath, args, {stdio: ["ignore", log, log], cwd: this.dir});
            closeSync(log);
            this.child = child;
            this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
            const outcome = await withTimeout(Promise.race([
                online,
                this.exited.then((code) => { throw new Error(`daemon exited (${code}) before online; log tail:\n${this.logTail()}`); })
            ]), timeoutMs, () => {
                throw new Error(`daemon not online within ${timeoutMs} ms; log tail:\n${this.logTail()}`);
            });
            return outcome - started;
        } finally {
            await watcher.endAsync(true);
        }
    }

    /**
     * Where start-up went, from the daemon's own log: spawn to its first log line (Node start and
     * module loading) and the engine's "model loaded" time (getLlama, which forks a binary test, the
     * model and the context). Log timestamps have millisecond resolution.
     */
    public startupBreakdown(): {toFirstLogMs: number | null; modelLoadMs: number | null} {
        let toFirstLogMs: number | null = null;
        let modelLoadMs: number | null = null;
        for (const line of this.logTail(1_000_000).split("\n")) {
            const entry = line.startsWith("{") ? parseJson(Buffer.from(line)) : null;
            if (!entry) continue;
            if (toFirstLogMs === null && typeof entry.timestamp === "string") toFirstLogMs = Date.parse(entry.timestamp) - this.spawnedAt;
            if (entry.message === "model loaded" && typeof entry.ms === "number") modelLoadMs = entry.ms;
        }
        return {toFirstLogMs, modelLoadMs};
    }

    /** SIGTERM and wait: a clean exit is what writes a --cpu-prof profile. */
    public async stop(): Promise<void> {
        const child = this.child;
        if (child && child.exitCode === null && child.signalCode === null) {
            child.kill("SIGTERM");
            const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
            await this.exited;
            clearTimeout(timer);
        }
        this.child = null;
    }

    public dispose(): void {
        rmSync(this.dir, {recursive: true, force: true});
    }

    public logTail(bytes = 3000): string {
        try {
            return readFileSync(this.logPath, "utf8").slice(-bytes);
        } catch {
            return "(no log)";
        }
    }
}

export interface RequestBody {
    prompt: string;
    maxTokens: number;
    stream: boolean;
    seed: number;
}

export interface MqttSample {
    /** publish to the PUBACK (the daemon acks once the job is journaled and fdatasync'd) */
    pubackMs: number;
    /** publish to the first streamed chunk; null with stream off */
    firstChunkMs: number | null;
    /** publish to the final reply */
    finalMs: number;
    completionTokens: number;
    chunks: number;
    /** as the daemon reported it in `timing` */
    daemon: {queueMs: number; ttftMs: number | null; totalMs: number};
    text: string;
}

interface Pending {
    started: number;
    firstChunk: number | null;
    chunks: number;
    resolve: (reply: Record<string, unknown>, at: number) => void;
}

/** One MQTT connection of a user's client: v5, TCP_NODELAY (docs/DESIGN.md: MQTT.js leaves Nagle on), replies on its own topic. */
export class BenchClient {
    private readonly pending = new Map<string, Pending>();
    private counter = 0;

    private constructor(private readonly client: MqttClient, private readonly replyTopic: string, private readonly name: string) {
        client.on("message", (_topic, payload) => {
            const at = performance.now();
            const reply = parseJson(payload);
            const id = typeof reply?.id === "string" ? reply.id : "";
            const p = this.pending.get(id);
            if (!reply || !p) return;
            if (reply.status === "streaming") {
                p.firstChunk ??= at;
                p.chunks++;
            } else {
                this.pending.delete(id);
                p.resolve(reply, at);
            }
        });
    }

    public static async connect(url: string, name: string): Promise<BenchClient> {
        const client = await mqtt.connectAsync(url, {protocolVersion: 5, clean: true, reconnectPeriod: 0, clientId: `bench-${name}`});
        (client.stream as {setNoDelay?: (on: boolean) => void}).setNoDelay?.(true);
        const replyTopic = `bench/replies/${name}`;
        await client.subscribeAsync(replyTopic, {qos: 1});
        return new BenchClient(client, replyTopic, name);
    }

    public async request(topic: string, body: RequestBody, timeoutMs = 120_000): Promise<MqttSample> {
        const id = `${this.name}-${++this.counter}`;
        const payload = JSON.stringify({id, prompt: body.prompt, maxTokens: body.maxTokens, stream: body.stream, seed: body.seed,
            temperature: 0, thinking: false});
        let timer: NodeJS.Timeout | undefined;
        const started = performance.now();
        const done = new Promise<{reply: Record<string, unknown>; at: number; p: Pending}>((resolve, reject) => {
            const p: Pending = {started, firstChunk: null, chunks: 0, resolve: (reply, at) => resolve({reply, at, p})};
            this.pending.set(id, p);
            timer = setTimeout(() => {
                this.pending.delete(id);
                reject(new Error(`no reply to ${id} within ${timeoutMs} ms`));
            }, timeoutMs);
        });
        await this.client.publishAsync(topic, payload, {qos: 1, properties: {responseTopic: this.replyTopic, correlationData: Buffer.from(id)}});
        const pubackMs = performance.now() - started;
        const {reply, at, p} = await done.finally(() => clearTimeout(timer));
        if (reply.status !== "ok") throw new Error(`request ${id} failed: ${JSON.stringify(reply).slice(0, 500)}`);
        const usage = reply.usage as {completionTokens: number};
        const timing = reply.timing as {queueMs: number; ttftMs: number | null; totalMs: number};
        return {pubackMs, firstChunkMs: p.firstChunk === null ? null : p.firstChunk - started, finalMs: at - started,
            completionTokens: usage.completionTokens, chunks: p.chunks,
            daemon: {queueMs: timing.queueMs, ttftMs: timing.ttftMs, totalMs: timing.totalMs}, text: String(reply.text)};
    }

    public async close(): Promise<void> {
        await this.client.endAsync(true);
    }
}

export interface MqttRound {
    concurrency: number;
    stream: boolean;
    samples: MqttSample[];
    wallMs: number;
    tokensPerSecond: number;
    /** CPU time the daemon spent on the round (set by the caller) */
    cpuSeconds?: number;
}

/** `clients.length` requests at once, one per client; tokens/s over first publish to last reply. */
export async function mqttRound(clients: BenchClient[], topic: string, body: RequestBody): Promise<MqttRound> {
    const started = performance.now();
    const samples = await Promise.all(clients.map((c) => c.request(topic, body)));
    const wallMs = performance.now() - started;
    const tokens = samples.reduce((a, s) => a + s.completionTokens, 0);
    return {concurrency: clients.length, stream: body.stream, samples, wallMs, tokensPerSecond: tokens / (wallMs / 1000)};
}

function parseJson(payload: Buffer): Record<string, unknown> | null {
    try {
        const v = JSON.parse(payload.toString("utf8")) as unknown;
        return typeof v === "object" && v !== null ? v as Record<string, unknown> : null;
    } catch {
        return null;
    }
}
