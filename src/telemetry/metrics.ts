/**
 * Prometheus text exposition (format 0.0.4) on an opt-in HTTP port, bound to 127.0.0.1 unless
 * configured otherwise. Names follow llama.cpp server's `/metrics` (`llamacpp:prompt_tokens_total`,
 * `llamacpp:tokens_predicted_total`, `llamacpp:requests_processing`, ...) with our `qwenedge:` prefix,
 * so dashboards built for llama-server carry over. Counters are read live at scrape time; host
 * gauges come from the latest health snapshot (no extra reads per scrape).
 */
import {createServer, type Server} from "node:http";
import type {HealthMessage} from "./health.js";
import type {InferenceFigures} from "./inference-stats.js";
import {DEVICE_STATES, type DeviceState} from "./status.js";

export interface MetricsInput {
    device: string;
    version: string;
    nodeLlamaCppVersion: string;
    model: string;
    state: DeviceState;
    inference: InferenceFigures;
    queued: number;
    running: number;
    paused: boolean;
    parallel: number;
    mqtt: {connected: boolean; reconnects: number};
    /** the latest health snapshot; null before the first */
    health: HealthMessage | null;
    processCpuSeconds: number;
    processRssBytes: number;
    processStartTimeSeconds: number;
}

type MetricType = "counter" | "gauge" | "summary";
interface Sample {
    suffix?: string;
    labels?: Record<string, string>;
    value: number;
}

/** Builds the exposition text family by family; a family whose value is unknown is left out. */
class Exposition {
    private readonly lines: string[] = [];

    public family(name: string, type: MetricType, help: string, samples: Sample[] | number | null): void {
        const list = typeof samples === "number" ? [{value: samples}] : samples;
        if (list === null || list.length === 0) return;
        this.lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
        for (const s of list) this.lines.push(`${name}${s.suffix ?? ""}${renderLabels(s.labels)} ${formatValue(s.value)}`);
    }

    public text(): string {
        return this.lines.join("\n") + "\n";
    }
}

export function renderMetrics(m: MetricsInput): string {
    const e = new Exposition();
    const f = m.inference;
    const p = "qwenedge:";
    e.family(`${p}prompt_tokens_total`, "counter", "Number of prompt tokens processed.", f.promptTokens);
    e.family(`${p}prompt_seconds_total`, "counter", "Prompt process time (to the first token) in seconds.", f.promptSeconds);
    e.family(`${p}tokens_predicted_total`, "counter", "Number of generation tokens processed.", f.tokensGenerated);
    e.family(`${p}tokens_predicted_seconds_total`, "counter", "Predict process time (after the first token) in seconds.", f.generationSeconds);
    e.family(`${p}prompt_tokens_seconds`, "gauge", "Average prompt throughput in tokens/s.",
        f.promptSeconds > 0 ? f.promptTokens / f.promptSeconds : null);
    e.family(`${p}predicted_tokens_seconds`, "gauge", "Average generation throughput in tokens/s.", f.tokensPerSecond.average);
    e.family(`${p}last_predicted_tokens_seconds`, "gauge", "Generation throughput of the last request in tokens/s.", f.tokensPerSecond.last);
    e.family(`${p}requests_processing`, "gauge", "Number of requests processing.", m.running);
    e.family(`${p}requests_deferred`, "gauge", "Number of requests waiting in the queue.", m.queued);
    e.family(`${p}slots`, "gauge", "Requests that can generate at the same time.", m.parallel);
    e.family(`${p}paused`, "gauge", "1 while new work is paused (e.g. too hot).", m.paused ? 1 : 0);
    e.family(`${p}requests_completed_total`, "counter", "Requests answered with a generation.", f.completed);
    e.family(`${p}requests_failed_total`, "counter", "Accepted requests answered with an error.", f.failed);
    e.family(`${p}requests_rejected_total`, "counter", "Requests refused at intake (invalid, too large, queue full).", f.rejected);
    e.family(`${p}request_errors_total`, "counter", "Error replies by code.",
        Object.entries(f.errors).sort(([a], [b]) => a.localeCompare(b)).map(([code, value]) => ({labels: {code}, value})));
    const ttft: Sample[] = [];
    if (f.ttftMs.p50 !== null) ttft.push({labels: {quantile: "0.5"}, value: f.ttftMs.p50 / 1000});
    if (f.ttftMs.p95 !== null) ttft.push({labels: {quantile: "0.95"}, value: f.ttftMs.p95 / 1000});
    ttft.push({suffix: "_sum", value: f.promptSeconds}, {suffix: "_count", value: f.ttftMs.count});
    e.family(`${p}time_to_first_token_seconds`, "summary", "Time to first token; quantiles over recent requests.", ttft);
    e.family(`${p}status`, "gauge", "1 for the device's current state.", DEVICE_STATES.map((state) => ({labels: {state}, value: state === m.state ? 1 : 0})));
    e.family(`${p}info`, "gauge", "Versions and the model served.",
        [{labels: {device: m.device, version: m.version, node_llama_cpp: m.nodeLlamaCppVersion, model: m.model}, value: 1}]);
    e.family(`${p}mqtt_connected`, "gauge", "1 while connected to the broker.", m.mqtt.connected ? 1 : 0);
    e.family(`${p}mqtt_reconnects_total`, "counter", "Reconnections to the broker since start.", m.mqtt.reconnects);
    hostFamilies(e, m.health);
    e.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", m.processCpuSeconds);
    e.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", m.processRssBytes);
    e.family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", m.processStartTimeSeconds);
    return e.text();
}

function hostFamilies(e: Exposition, h: HealthMessage | null): void {
    if (h === null) return;
    const p = "qwenedge:";
    e.family(`${p}memory_total_bytes`, "gauge", "MemTotal.", h.memory.totalBytes);
    e.family(`${p}memory_available_bytes`, "gauge", "MemAvailable.", h.memory.availableBytes);
    e.family(`${p}memory_budget_bytes`, "gauge", "Headroom under the tightest memory limit minus the configured reserve.", h.memory.budgetBytes);
    e.family(`${p}cgroup_memory_limit_bytes`, "gauge", "Memory limit of the service's cgroup.", h.memory.cgroupLimitBytes);
    e.family(`${p}cgroup_memory_usage_bytes`, "gauge", "Memory usage of the service's cgroup (page cache included).", h.memory.cgroupUsageBytes);
    e.family(`${p}cpu_usage_ratio`, "gauge", "Whole-machine CPU usage between the last two health snapshots (0-1).",
        h.cpu.usagePercent === null ? null : h.cpu.usagePercent / 100);
    e.family(`${p}load_average`, "gauge", "System load average.", [
        {labels: {period: "1m"}, value: h.cpu.load1}, {labels: {period: "5m"}, value: h.cpu.load5}, {labels: {period: "15m"}, value: h.cpu.load15}]);
    e.family(`${p}temperature_celsius`, "gauge", "Hottest thermal zone in degrees Celsius.", h.cpu.temperatureC);
    const t = h.cpu.throttling;
    if (t !== null) {
        const samples: Sample[] = [];
        for (const [scope, flags] of [["now", t.now], ["since_boot", t.sinceBoot]] as const) {
            samples.push({labels: {flag: "under_voltage", scope}, value: flags.underVoltage ? 1 : 0},
                {labels: {flag: "frequency_capped", scope}, value: flags.frequencyCapped ? 1 : 0},
                {labels: {flag: "throttled", scope}, value: flags.throttled ? 1 : 0},
                {labels: {flag: "soft_temperature_limit", scope}, value: flags.softTemperatureLimit ? 1 : 0});
        }
        e.family(`${p}throttling`, "gauge", "Raspberry Pi get_throttled flags (1 = raised).", samples);
    }
    if (h.disk !== null) {
        e.family(`${p}disk_free_bytes`, "gauge", "Free space where models live.", [{labels: {path: h.disk.path}, value: h.disk.freeBytes}]);
        e.family(`${p}disk_total_bytes`, "gauge", "Size of the file system where models live.", [{labels: {path: h.disk.path}, value: h.disk.totalBytes}]);
    }
}

function escapeHelp(text: string): string {
    return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function renderLabels(labels: Record<string, string> | undefined): string {
    if (!labels) return "";
    const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n")}"`);
    return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function formatValue(value: number): string {
    if (Number.isNaN(value)) return "NaN";
    if (value === Infinity) return "+Inf";
    if (value === -Infinity) return "-Inf";
    return Number.isInteger(value) ? value.toString() : String(Math.round(value * 1e6) / 1e6);
}

export interface MetricsServerDeps {
    host: string;
    port: number;
    render: () => string;
    onError: (err: Error) => void;
}

export class MetricsServer {
    private readonly deps: MetricsServerDeps;
    private server: Server | null = null;

    public constructor(deps: MetricsServerDeps) {
        this.deps = deps;
    }

    /** Listens; resolves with the bound port. A port that cannot be bound is reported, not fatal. */
    public start(): Promise<number | null> {
        const server = createServer((req, res) => {
            const path = (req.url ?? "/").split("?")[0];
            if (path !== "/metrics" || (req.method !== "GET" && req.method !== "HEAD")) {
                res.writeHead(404, {"content-type": "text/plain; charset=utf-8"}).end("not found: try GET /metrics\n");
                return;
            }
            let body: string;
            try {
                body = this.deps.render();
            } catch (err) {
                this.deps.onError(err as Error);
                res.writeHead(500, {"content-type": "text/plain; charset=utf-8"}).end("metrics unavailable\n");
                return;
            }
            res.writeHead(200, {"content-type": "text/plain; version=0.0.4; charset=utf-8", "content-length": Buffer.byteLength(body)});
            res.end(req.method === "HEAD" ? undefined : body);
        });
        this.server = server;
        return new Promise((resolve) => {
            server.once("error", (err) => {
                this.deps.onError(err);
                this.server = null;
                resolve(null);
            });
            server.listen(this.deps.port, this.deps.host, () => {
                const address = server.address();
                resolve(typeof address === "object" && address ? address.port : null);
            });
        });
    }

    public async stop(): Promise<void> {
        const server = this.server;
        this.server = null;
        if (!server) return;
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
    }
}
