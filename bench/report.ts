/** Turns the collected samples into bench/results/latest.json and the printed table. */
import type {MqttRound, MqttSample} from "./daemon-client.js";
import type {BenchOptions} from "./options.js";
import type {LoadWindow, MachineInfo, ProcessMemory} from "./proc.js";
import type {GenerationSettings, RawRound, RawSample} from "./raw.js";
import {median, quantile, round, spread, type Spread} from "./stats.js";

export interface IdleFigures {
    cpuPercent: number;
    seconds: number;
    memory: ProcessMemory;
    modelRssBytes: number | null;
}

export interface Collected {
    options: BenchOptions;
    settings: GenerationSettings;
    healthSupported: boolean;
    cells: {raw1: RawRound[]; off1: MqttRound[]; on1: MqttRound[]; health1: MqttRound[]; healthBase: MqttRound[]; rawP: RawRound[];
        offP: MqttRound[]; onP: MqttRound[]};
    latency: {raw: RawSample[]; mqtt: MqttSample[]};
    roundLoad: LoadWindow[];
    load: Record<string, LoadWindow>;
    /** [default daemon, health-at-N-s daemon, its default twin (both when supported)] */
    idle: IdleFigures[];
    startupMs: number[];
    startupParts: Array<{toFirstLogMs: number | null; modelLoadMs: number | null}>;
    /** the raw process (node-llama-cpp alone, same model and context) over the same idle window */
    rawIdle: IdleFigures | null;
    modelBytes: number;
    modelGenerated: boolean;
    versions: {node: string; nodeLlamaCpp: string; qwenEdge: string};
    machine: MachineInfo;
    durationSeconds: number;
    profiles: string | null;
    notes: string[];
}

const MB = 2 ** 20;
export const TARGETS = {
    throughputRatioStreamOff: {min: 0.97},
    throughputRatioStreamOn: {min: 0.95},
    addedFirstChunkLatencyMsP50: {max: 5},
    idleCpuPercent: {max: 0.5},
    rssBeyondModelMB: {max: 120},
    healthAt1sThroughputRatio: {min: 0.98}
} as const;

const tps = (rounds: Array<RawRound | MqttRound>): number[] => rounds.map((r) => r.tokensPerSecond);
/** Ratio of each daemon round to the raw round of the same pass: adjacent in time, so fair on a noisy machine. */
const paired = (a: Array<RawRound | MqttRound>, b: Array<RawRound | MqttRound>): number[] =>
    a.flatMap((x, i) => (b[i] ? [x.tokensPerSecond / b[i].tokensPerSecond] : []));
const pct = (values: number[]): {min: number | null; p50: number | null; p95: number | null; n: number} =>
    ({min: round(quantile(values, 0), 2), p50: round(quantile(values, 0.5), 2), p95: round(quantile(values, 0.95), 2), n: values.length});
const minOf = (...values: Array<number | null>): number | null => {
    const v = values.filter((x): x is number => x !== null);
    return v.length > 0 ? Math.min(...v) : null;
};

/** Added latency of each daemon sample over the median raw figure of the same concurrency. */
function added(samples: MqttSample[], pick: (s: MqttSample) => number | null, rawMedian: number | null): number[] {
    if (rawMedian === null) return [];
    return samples.flatMap((s) => {
        const v = pick(s);
        return v === null ? [] : [v - rawMedian];
    });
}

export function buildResult(c: Collected): Record<string, unknown> {
    const k = c.cells;
    const flat = <T>(rounds: Array<{samples: T[]}>): T[] => rounds.flatMap((r) => r.samples);
    const raw1 = flat(k.raw1);
    const rawP = flat(k.rawP);
    // A stream's first chunk is compared with the first text node-llama-cpp hands out, not the first token.
    const rawText1 = median(raw1.map((s) => s.firstTextMs));
    const rawTotal1 = median(raw1.map((s) => s.totalMs));
    const rawTextP = median(rawP.map((s) => s.firstTextMs));
    const rawTotalP = median(rawP.map((s) => s.totalMs));
    const latRawText = median(c.latency.raw.map((s) => s.firstTextMs));

    const ratios = {
        streamOff1: spread(paired(k.off1, k.raw1)), streamOn1: spread(paired(k.on1, k.raw1)),
        streamOffP: spread(paired(k.offP, k.rawP)), streamOnP: spread(paired(k.onP, k.rawP)),
        healthAt1s: spread(paired(k.health1, k.healthBase))
    };
    // Other load only ever slows a run down, so the fastest run of each kind is its least disturbed one.
    const best = (a: Array<RawRound | MqttRound>, b: Array<RawRound | MqttRound>): number | null =>
        a.length > 0 && b.length > 0 ? round(Math.max(...tps(a)) / Math.max(...tps(b)), 4) : null;
    const bestRatios = {
        note: "fastest daemon run over fastest raw run: less sensitive to a busy machine than the paired median",
        streamOff1: best(k.off1, k.raw1), streamOn1: best(k.on1, k.raw1), streamOffP: best(k.offP, k.rawP), streamOnP: best(k.onP, k.rawP),
        healthAt1s: best(k.health1, k.healthBase)
    };
    const firstChunk = pct(added(c.latency.mqtt, (s) => s.firstChunkMs, latRawText));
    const finalOff1 = pct(added(flat(k.off1), (s) => s.finalMs, rawTotal1));
    const idleA = c.idle[0];
    const idleB = c.idle[1];
    const idleB0 = c.idle[2];
    const top = {
        rawTokensPerSecond: round(median(tps(k.raw1)), 1),
        throughputRatioStreamOff: round(minOf(ratios.streamOff1.median, ratios.streamOffP.median), 4),
        throughputRatioStreamOn: round(minOf(ratios.streamOn1.median, ratios.streamOnP.median), 4),
        addedFirstChunkLatencyMsP50: firstChunk.p50,
        addedFirstChunkLatencyMsP95: firstChunk.p95,
        addedFinalReplyLatencyMsP50: finalOff1.p50,
        addedFinalReplyLatencyMsP95: finalOff1.p95,
        idleCpuPercent: idleA ? round(idleA.cpuPercent, 3) : null,
        rssBeyondModelMB: idleA ? round((idleA.memory.rssBytes - c.modelBytes) / MB, 1) : null,
        startupToOnlineMs: round(median(c.startupMs), 0),
        healthAt1sThroughputRatio: c.healthSupported ? ratios.healthAt1s.median : null
    };
    const targets: Record<string, {value: number | null; target: string; met: boolean | null}> = {};
    for (const [key, t] of Object.entries(TARGETS)) {
        const value = top[key as keyof typeof top];
        const met = value === null ? null : "min" in t ? value >= t.min : value <= t.max;
        targets[key] = {value, target: "min" in t ? `>= ${t.min}` : `<= ${t.max}`, met};
    }

    const cell = (rounds: MqttRound[], rawTtft: number | null, rawTotal: number | null): Record<string, unknown> => {
        const s = flat(rounds);
        return {
            tokensPerSecond: spread(tps(rounds)),
            firstChunkMs: pct(s.flatMap((x) => (x.firstChunkMs === null ? [] : [x.firstChunkMs]))),
            addedFirstChunkMs: pct(added(s, (x) => x.firstChunkMs, rawTtft)),
            finalMs: pct(s.map((x) => x.finalMs)),
            addedFinalMs: pct(added(s, (x) => x.finalMs, rawTotal)),
            pubackMs: pct(s.map((x) => x.pubackMs)),
            daemonQueueMs: pct(s.map((x) => x.daemon.queueMs)),
            daemonTtftMs: pct(s.flatMap((x) => (x.daemon.ttftMs === null ? [] : [x.daemon.ttftMs]))),
            chunksPerRequest: median(s.map((x) => x.chunks)),
            completionTokens: median(s.map((x) => x.completionTokens))
        };
    };
    const rawCell = (rounds: RawRound[]): Record<string, unknown> => {
        const s = flat(rounds);
        return {tokensPerSecond: spread(tps(rounds)), ttftMs: pct(s.map((x) => x.ttftMs)), firstTextMs: pct(s.map((x) => x.firstTextMs)),
            totalMs: pct(s.map((x) => x.totalMs)),
            clearHistoryMs: pct(s.map((x) => x.clearHistoryMs)), completionTokens: median(s.map((x) => x.completionTokens))};
    };
    const sameText = [...flat(k.off1), ...flat(k.on1)].every((s) => s.text === raw1[0]?.text);
    if (!sameText) c.notes.push("the daemon's greedy text differed from the raw text: the two paths do not run the same generation");
    const others = c.roundLoad.map((w) => w.otherCores);
    const busy = median(others);
    if (busy !== null && busy > 0.2)
        c.notes.push(`other processes kept ${busy.toFixed(2)} cores busy during the rounds: the ratios and latencies are not reliable, run again on a quiet machine`);

    return {
        ...top,
        targets,
        ratios,
        bestRatios,
        cpuPerToken: cpuPerToken(k),
        raw: {oneClient: rawCell(k.raw1), concurrent: rawCell(k.rawP)},
        daemon: {
            streamOffOneClient: cell(k.off1, rawText1, rawTotal1), streamOnOneClient: cell(k.on1, rawText1, rawTotal1),
            streamOffConcurrent: cell(k.offP, rawTextP, rawTotalP), streamOnConcurrent: cell(k.onP, rawTextP, rawTotalP),
            healthAt1sStreamOffOneClient: c.healthSupported ? cell(k.health1, rawText1, rawTotal1) : null,
            healthBaseStreamOffOneClient: c.healthSupported ? cell(k.healthBase, rawText1, rawTotal1) : null
        },
        firstChunkLatency: {
            maxTokens: c.options.latencyMaxTokens, pairs: c.latency.mqtt.length,
            rawTtftMs: pct(c.latency.raw.map((s) => s.ttftMs)),
            rawFirstTextMs: pct(c.latency.raw.map((s) => s.firstTextMs)),
            daemonFirstChunkMs: pct(c.latency.mqtt.flatMap((s) => (s.firstChunkMs === null ? [] : [s.firstChunkMs]))),
            addedMs: firstChunk,
            pubackMs: pct(c.latency.mqtt.map((s) => s.pubackMs)),
            // Where the added time goes: outside the engine (MQTT both ways, intake, journal) and inside it.
            outsideEngineMs: pct(c.latency.mqtt.flatMap((s) => (s.firstChunkMs === null || s.daemon.ttftMs === null ? []
                : [s.firstChunkMs - s.daemon.queueMs - s.daemon.ttftMs]))),
            daemonReportedTtftMs: pct(c.latency.mqtt.flatMap((s) => (s.daemon.ttftMs === null ? [] : [s.daemon.ttftMs])))
        },
        idle: {
            seconds: idleA?.seconds ?? null,
            default: idleA ? idleFigures(idleA, c.modelBytes) : null,
            healthAt1s: idleB ? idleFigures(idleB, c.modelBytes) : null,
            healthBaseDefault: idleB0 ? idleFigures(idleB0, c.modelBytes) : null,
            rawNodeLlamaCppOnly: c.rawIdle ? {
                note: "the raw process: only node-llama-cpp with the same model and context, after the same work and idle window",
                ...idleFigures(c.rawIdle, c.modelBytes)
            } : null,
            daemonOverRawMB: idleA && c.rawIdle ? round((idleA.memory.rssBytes - c.rawIdle.memory.rssBytes) / MB, 1) : null
        },
        startup: {
            samplesMs: c.startupMs.map((x) => Math.round(x)), medianMs: top.startupToOnlineMs,
            note: "spawn to the retained online status; toFirstLog = Node start and module loading, modelLoad = getLlama (forks a binary test) + model + context",
            toFirstLogMsMedian: median(c.startupParts.flatMap((x) => (x.toFirstLogMs === null ? [] : [x.toFirstLogMs]))),
            modelLoadMsMedian: median(c.startupParts.flatMap((x) => (x.modelLoadMs === null ? [] : [x.modelLoadMs]))),
            parts: c.startupParts
        },
        model: {path: c.settings.modelPath, bytes: c.modelBytes, generated: c.modelGenerated,
            ...(c.modelGenerated ? {kind: "endless", hidden: 256, layers: 8, seed: c.options.seed} : {})},
        machine: c.machine,
        machineLoad: {
            note: "cores kept busy by other processes while each phase ran (the machine may be shared)",
            roundsOtherCores: spread(others), rounds: c.roundLoad, phases: c.load
        },
        versions: c.versions,
        settings: {
            threads: c.settings.threads, parallel: c.settings.parallel, contextSize: c.settings.contextSize, batchSize: c.settings.batchSize,
            maxTokens: c.settings.maxTokens, temperature: 0, presencePenalty: 0, topP: c.settings.topP, topK: c.settings.topK,
            seed: c.settings.seed, prompt: c.settings.prompt, systemPrompt: c.settings.systemPrompt, thinking: false,
            rounds: c.options.rounds, latencyPairs: c.options.latencyPairs, idleSeconds: c.options.idleSeconds,
            startupRuns: c.options.startupRuns, healthIntervalSeconds: c.options.healthInterval,
            daemonNodeFlags: c.options.daemonNodeFlags, quick: c.options.quick, cpuProfiles: c.profiles
        },
        sameGreedyText: sameText,
        notes: c.notes,
        at: new Date().toISOString(),
        durationSeconds: c.durationSeconds
    };
}

/**
 * CPU time of the generating process per token, summed over all rounds, and the daemon's over raw.
 * Another process on the machine stretches wall time far more than it changes CPU time per token.
 */
function cpuPerToken(k: Collected["cells"]): Record<string, unknown> {
    const per = (rounds: Array<RawRound | MqttRound>): number | null => {
        const cpu = rounds.reduce((a, r) => a + (r.cpuSeconds ?? 0), 0);
        const tokens = rounds.reduce((a, r) => a + ("samples" in r ? (r.samples as Array<{completionTokens: number}>).reduce((x, y) => x + y.completionTokens, 0) : 0), 0);
        return tokens > 0 ? (cpu * 1e6) / tokens : null;
    };
    const us = {raw1: per(k.raw1), off1: per(k.off1), on1: per(k.on1), health1: per(k.health1), healthBase: per(k.healthBase), rawP: per(k.rawP),
        offP: per(k.offP), onP: per(k.onP)};
    const r = (a: number | null, b: number | null): number | null => (a === null || b === null ? null : round(a / b, 3));
    return {
        note: "CPU microseconds per token of the generating process (the raw process or the daemon), summed over rounds; /proc ticks are 10 ms",
        microseconds: Object.fromEntries(Object.entries(us).map(([key, v]) => [key, round(v, 1)])),
        daemonOverRaw: {streamOff1: r(us.off1, us.raw1), streamOn1: r(us.on1, us.raw1), streamOffP: r(us.offP, us.rawP), streamOnP: r(us.onP, us.rawP),
            healthAt1sOverDefault: r(us.health1, us.healthBase)}
    };
}

function idleFigures(f: IdleFigures, modelBytes: number): Record<string, unknown> {
    const mb = (x: number): number | null => round(x / MB, 1);
    return {cpuPercentOfOneCore: round(f.cpuPercent, 3), rssMB: mb(f.memory.rssBytes), rssAnonMB: mb(f.memory.rssAnonBytes),
        rssFileMB: mb(f.memory.rssFileBytes), peakRssMB: mb(f.memory.hwmBytes), modelFileMB: mb(modelBytes),
        modelResidentMB: f.modelRssBytes === null ? null : mb(f.modelRssBytes), rssBeyondModelMB: mb(f.memory.rssBytes - modelBytes),
        peakRssBeyondModelMB: mb(f.memory.hwmBytes - modelBytes)};
}

/** The human-readable table: the headline figures, their targets, and how noisy the machine was. */
export function renderTable(r: Record<string, unknown>): string {
    const g = (path: string): unknown => path.split(".").reduce<unknown>((o, key) => (o as Record<string, unknown> | null)?.[key] ?? null, r);
    const n = (path: string, digits = 1): string => {
        const v = g(path);
        return typeof v === "number" ? v.toFixed(digits) : "n/a";
    };
    const range = (path: string, digits = 3): string => {
        const s = g(path) as Spread | null;
        return s && s.min !== null && s.max !== null ? `[${s.min.toFixed(digits)}-${s.max.toFixed(digits)}]` : "";
    };
    const met = (key: string): string => {
        const t = g(`targets.${key}`) as {met: boolean | null; target: string} | null;
        return t ? `${t.target.padEnd(8)} ${t.met === null ? "n/a" : t.met ? "yes" : "NO"}` : "";
    };
    const hi = n("settings.healthIntervalSeconds", 0);
    const rows: Array<[string, string, string]> = [
        ["raw tokens/s, 1 client / 2 concurrent", `${n("raw.oneClient.tokensPerSecond.median")} / ${n("raw.concurrent.tokensPerSecond.median")}`, ""],
        ["raw time to first token / first text, ms p50", `${n("firstChunkLatency.rawTtftMs.p50")} / ${n("firstChunkLatency.rawFirstTextMs.p50")}`, ""],
        ["throughput ratio stream off, 1 client", `${n("ratios.streamOff1.median", 3)} ${range("ratios.streamOff1")} best ${n("bestRatios.streamOff1", 3)}`, ""],
        ["throughput ratio stream off, concurrent", `${n("ratios.streamOffP.median", 3)} ${range("ratios.streamOffP")} best ${n("bestRatios.streamOffP", 3)}`, ""],
        ["throughput ratio stream off (worse of two)", n("throughputRatioStreamOff", 3), met("throughputRatioStreamOff")],
        ["throughput ratio stream on, 1 client", `${n("ratios.streamOn1.median", 3)} ${range("ratios.streamOn1")} best ${n("bestRatios.streamOn1", 3)}`, ""],
        ["throughput ratio stream on, concurrent", `${n("ratios.streamOnP.median", 3)} ${range("ratios.streamOnP")} best ${n("bestRatios.streamOnP", 3)}`, ""],
        ["throughput ratio stream on (worse of two)", n("throughputRatioStreamOn", 3), met("throughputRatioStreamOn")],
        ["added latency to first chunk, ms p50", n("addedFirstChunkLatencyMsP50"), met("addedFirstChunkLatencyMsP50")],
        ["added latency to first chunk, ms p95", n("addedFirstChunkLatencyMsP95"), ""],
        ["added latency to final reply, ms p50 / p95", `${n("addedFinalReplyLatencyMsP50")} / ${n("addedFinalReplyLatencyMsP95")}`, ""],
        ["  of which PUBACK (journal fdatasync), ms p50", n("firstChunkLatency.pubackMs.p50"), ""],
        ["idle CPU, % of one core", n("idleCpuPercent", 3), met("idleCpuPercent")],
        ["  a second default daemon / raw process, same window",
            `${n("idle.healthBaseDefault.cpuPercentOfOneCore", 3)} / ${n("idle.rawNodeLlamaCppOnly.cpuPercentOfOneCore", 3)}`, ""],
        ["RSS / model file, MB", `${n("idle.default.rssMB")} / ${n("idle.default.modelFileMB")}`, ""],
        ["RSS beyond the model, MB", n("rssBeyondModelMB"), met("rssBeyondModelMB")],
        ["  raw process (node-llama-cpp alone): RSS beyond the model, MB", n("idle.rawNodeLlamaCppOnly.rssBeyondModelMB"), ""],
        ["peak RSS beyond the model, daemon / raw process, MB", `${n("idle.default.peakRssBeyondModelMB")} / ${n("idle.rawNodeLlamaCppOnly.peakRssBeyondModelMB")}`, ""],
        ["daemon CPU per token / raw, stream off / on", `${n("cpuPerToken.daemonOverRaw.streamOff1", 3)} / ${n("cpuPerToken.daemonOverRaw.streamOn1", 3)}`, ""],
        ["start-up to online, ms (median)", n("startupToOnlineMs", 0), ""],
        ["  of which Node + modules / model load, ms", `${n("startup.toFirstLogMsMedian", 0)} / ${n("startup.modelLoadMsMedian", 0)}`, ""],
        [`health at ${hi} s: throughput ratio`, `${n("healthAt1sThroughputRatio", 3)} ${range("ratios.healthAt1s")} best ${n("bestRatios.healthAt1s", 3)}`,
            met("healthAt1sThroughputRatio")],
        [`health at ${hi} s: CPU per token / default`, n("cpuPerToken.daemonOverRaw.healthAt1sOverDefault", 3), ""],
        [`health at ${hi} s: idle CPU, % of one core`, n("idle.healthAt1s.cpuPercentOfOneCore", 3), ""]
    ];
    const w = Math.max(...rows.map((x) => x[0].length));
    const v = Math.max(...rows.map((x) => x[1].length));
    const m = r.machine as MachineInfo;
    const s = r.settings as Record<string, unknown>;
    const versions = r.versions as Record<string, string>;
    const others = g("machineLoad.roundsOtherCores") as Spread;
    const lines = [
        `qwen-edge ${versions.qwenEdge} benchmark: ${String(g("model.path")).split("/").pop()} (${n("idle.default.modelFileMB")} MB), `
            + `threads ${String(s.threads)}, parallel ${String(s.parallel)}, maxTokens ${String(s.maxTokens)}, ${String(s.rounds)} rounds`,
        `machine: ${m.cpuModel}, ${m.cores} cores, node ${versions.node}, node-llama-cpp ${versions.nodeLlamaCpp}; `
            + `other processes kept ${others.median ?? "?"} cores busy during the rounds (${others.min ?? "?"}-${others.max ?? "?"})`,
        "",
        `${"figure".padEnd(w)}  ${"value".padEnd(v)}  target   met`,
        ...rows.map(([a, b, c]) => `${a.padEnd(w)}  ${b.padEnd(v)}  ${c}`.trimEnd())
    ];
    for (const note of r.notes as string[]) lines.push(`note: ${note}`);
    return lines.join("\n");
}

