/**
 * Prometheus text exposition (format 0.0.4) on an opt-in HTTP port, bound to 127.0.0.1 unless
 * configured otherwise. Names follow Prometheus's conventions (`qwen_edge_` prefix, base units,
 * counters end in `_total`; `:` is reserved for recording rules) and, where a figure means the same,
 * llama.cpp server's names (`llamacpp:prompt_tokens_total` is `qwen_edge_prompt_tokens_total`), so
 * dashboards carry over with the prefix changed. Counters are read live at scrape time and exist from
 * the start (an error code that never occurred is 0, not absent); host gauges come from the latest
 * health snapshot; the `process_*` figures are read from /proc/self at scrape time.
 */
import {createServer, type Server} from "node:http";
import {WIRE_ERROR_CODES} from "../errors.js";
import type {HealthMessage} from "./health.js";
import type {InferenceFigures, RecentRates} from "./inference-stats.js";
import type {ProcessFigures} from "./process-figures.js";
import {DEVICE_STATES, type DeviceState} from "./status.js";
import type {RouteCounters} from "../routes/router.js";

export interface MetricsInput {
    device: string;
    version: string;
    nodeLlamaCppVersion: string;
    model: string;
    state: DeviceState;
    inference: InferenceFigures;
    /** prompt and generation speed over the recent window */
    rates: RecentRates;
    queued: number;
    running: number;
    paused: boolean;
    parallel: number;
    mqtt: {connected: boolean; reconnects: number};
    /** the latest health snapshot; null before the first */
    health: HealthMessage | null;
    process: ProcessFigures;
    /** each configured route's counters */
    routes: Record<string, RouteCounters>;
    jobs: HealthMessage["jobs"];
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

const P = "qwen_edge_";

export function renderMetrics(m: MetricsInput): string {
    const e = new Exposition();
    const f = m.inference;
    e.family(`${P}prompt_tokens_total`, "counter", "Prompt tokens processed.", f.promptTokens);
    e.family(`${P}prompt_seconds_total`, "counter", "Time spent processing prompts (to the first token), in seconds.", f.promptSeconds);
    e.family(`${P}tokens_predicted_total`, "counter", "Tokens generated.", f.tokensGenerated);
    e.family(`${P}tokens_predicted_seconds_total`, "counter", "Time spent generating after the first token, in seconds.", f.generationSeconds);
    const window = `over the requests that finished in the last ${f.tokensPerSecond.windowSeconds} s (0 when none did)`;
    e.family(`${P}prompt_tokens_per_second`, "gauge", `Prompt processing speed in tokens per second ${window}.`, m.rates.prompt ?? 0);
    e.family(`${P}predicted_tokens_per_second`, "gauge", `Generation speed in tokens per second ${window}.`, m.rates.predicted ?? 0);
    e.family(`${P}requests_processing`, "gauge", "Requests generating now.", m.running);
    e.family(`${P}requests_deferred`, "gauge", "Requests waiting in the queue.", m.queued);
    e.family(`${P}slots`, "gauge", "Requests that can generate at the same time.", m.parallel);
    e.family(`${P}paused`, "gauge", "1 while new work is paused (e.g. too hot).", m.paused ? 1 : 0);
    e.family(`${P}requests_completed_total`, "counter", "Requests answered with a generation.", f.completed);
    e.family(`${P}requests_failed_total`, "counter", "Accepted requests answered with an error.", f.failed);
    e.family(`${P}requests_rejected_total`, "counter", "Requests refused at intake (invalid, too large, queue full).", f.rejected);
    const codes = [...new Set<string>([...WIRE_ERROR_CODES, ...Object.keys(f.errors)])].sort();
    e.family(`${P}request_errors_total`, "counter", "Error replies by code.", codes.map((code) => ({labels: {code}, value: f.errors[code] ?? 0})));
    const ttft: Sample[] = [];
    if (f.ttftMs.p50 !== null) ttft.push({labels: {quantile: "0.5"}, value: f.ttftMs.p50 / 1000});
    if (f.ttftMs.p95 !== null) ttft.push({labels: {quantile: "0.95"}, value: f.ttftMs.p95 / 1000});
    ttft.push({suffix: "_sum", value: f.promptSeconds}, {suffix: "_count", value: f.ttftMs.count});
    e.family(`${P}time_to_first_token_seconds`, "summary", "Time to first token; quantiles over recent requests.", ttft);
    e.family(`${P}status`, "gauge", "1 for the device's current state.", DEVICE_STATES.map((state) => ({labels: {state}, value: state === m.state ? 1 : 0})));
    e.family(`${P}info`, "gauge", "Versions and the model served.",
        [{labels: {device: m.device, version: m.version, node_llama_cpp: m.nodeLlamaCppVersion, model: m.model}, value: 1}]);
    e.family(`${P}mqtt_connected`, "gauge", "1 while connected to the broker.", m.mqtt.connected ? 1 : 0);
    e.family(`${P}mqtt_reconnects_total`, "counter", "Reconnections to the broker since start.", m.mqtt.reconnects);
    const cache = m.health?.inference.promptCache;
    if (cache) {
        e.family(`${P}prompt_cache_hits_total`, "counter", "Requests that reused evaluated prompt tokens (docs/PROMPT-REUSE.md).", cache.hits);
        e.family(`${P}prompt_cache_misses_total`, "counter", "Requests that evaluated their whole prompt.", cache.misses);
        e.family(`${P}prompt_tokens_cached_total`, "counter", "Prompt tokens reused instead of evaluated again.", cache.reusedTokens);
        e.family(`${P}prompt_cache_checkpoint_bytes`, "gauge", "Memory held by prompt-reuse checkpoints.", cache.checkpointBytes);
    }
    const conversations = m.health?.conversations;
    if (conversations) {
        e.family(`${P}conversations`, "gauge", "Conversations kept (docs/PROMPT-REUSE.md).", conversations.count);
        e.family(`${P}conversation_tokens`, "gauge", "History tokens the kept conversations hold.", conversations.tokens);
        e.family(`${P}conversations_evicted_total`, "counter", "Conversations forgotten for a bound (count, idle time, tokens).", conversations.evicted);
    }
    e.family(`${P}jobs_pending`, "gauge", "Accepted requests in the job journal, not answered yet.", m.jobs.pending);
    e.family(`${P}replies_dropped_total`, "counter", "Final replies the broker would not take, given up after retries.", m.jobs.repliesDropped);
    routeFamilies(e, m.routes);
    hostFamilies(e, m.health);
    const p = m.process;
    e.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", p.cpuSeconds);
    e.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", p.residentBytes);
    e.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", p.virtualBytes);
    e.family("process_open_fds", "gauge", "Number of open file descriptors.", p.openFds);
    e.family("process_max_fds", "gauge", "Maximum number of open file descriptors.", p.maxFds);
    e.family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", p.startTimeSeconds);
    return e.text();
}

/** Route counters as outcome-labelled counters: rate(...) of any outcome, summed per route. */
const ROUTE_OUTCOMES: ReadonlyArray<[keyof RouteCounters, string]> = [
    ["received", "received"], ["filtered", "filtered"], ["rateLimited", "rate_limited"], ["routeLimited", "route_limited"],
    ["retainedCapped", "retained_capped"], ["invalid", "invalid"], ["loopRefused", "loop_refused"], ["retainedSkipped", "retained_skipped"],
    ["accepted", "accepted"], ["answered", "answered"], ["failed", "failed"]
];

function routeFamilies(e: Exposition, routes: Record<string, RouteCounters>): void {
    const names = Object.keys(routes).sort();
    if (names.length === 0) return;
    e.family(`${P}route_messages_total`, "counter", "Messages on each prompt route's topic, by what became of them (docs/ROUTES.md).",
        names.flatMap((route) => ROUTE_OUTCOMES.map(([key, outcome]) => ({labels: {route, outcome}, value: routes[route]![key]}))));
}

function hostFamilies(e: Exposition, h: HealthMessage | null): void {
    if (h === null) return;
    const p = P;
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
