/**
 * One node-llama-cpp measurement in a process of its own (a fresh `getLlama` per configuration:
 * maxThreads and the binary are fixed per Llama instance). Prints one JSON line: NodeResult.
 *
 * Modes, from the daemon's path down to the bare decode call:
 * - engine: src/inference/engine.ts itself (LlamaChatSession per request on a pooled sequence,
 *   QwenChatWrapper 3.5, the daemon's default sampling), exactly what the daemon runs;
 * - completion: LlamaCompletion on one sequence, greedy (no chat wrapper, no segment parsing);
 * - evaluate: `sequence.evaluate()`, greedy sampling in node-llama-cpp's native sampler;
 * - decode: `evaluateWithoutGeneratingNewTokens([token])` once per token, no sampling: the same
 *   work as llama-bench's tg test, so the gap left here is the binding and its threading.
 */
import {getLlama, LlamaCompletion, LlamaLogLevel, type Llama, type LlamaContext, type Token} from "node-llama-cpp";
import {readdirSync, readFileSync} from "node:fs";
import {performance} from "node:perf_hooks";
import {Engine, NATIVE_BUILD_CMAKE_OPTIONS} from "../../src/inference/engine.js";
import type {Logger} from "../../src/log.js";

export type NodeMode = "engine" | "completion" | "evaluate" | "decode";

export interface NodeSettings {
    modelPath: string;
    mode: NodeMode;
    threads: number;
    /** how the context gets its threads: a number (as the engine), {ideal, min}, or not at all */
    contextThreads: "number" | "idealMin" | "unset";
    /** getLlama maxThreads: the thread count (as the engine) or node-llama-cpp's default */
    maxThreads: "threads" | "unset";
    batchSize: number;
    contextSize: number;
    genTokens: number;
    reps: number;
    /** stop repeating after this much measured time (at least two samples) */
    maxSeconds: number;
    prompt: string;
    /** UV_THREADPOOL_SIZE for the child: 1 as the daemon's launcher sets it, 4 is Node's default */
    uvPool: number;
}

export interface NodeSample {
    tokens: number;
    ttftMs: number;
    /** first token to last: generation only, comparable with llama-bench's tg */
    genMs: number;
    /** per-thread scheduler accounting over the same span (first token to last) */
    threads: ThreadSpan[];
}

/** One thread's share of a generation span, from /proc/self/task/<tid>/schedstat (nanosecond clock). */
export interface ThreadSpan {
    tid: number;
    name: string;
    /** time on a CPU */
    cpuMs: number;
    /** time runnable but waiting for a CPU (contention) */
    waitMs: number;
}

/**
 * Where a generated token's wall time goes, per token, over the measured samples. `workersCpuMs`:
 * every thread but Node's main one (the decode runs on whichever libuv pool thread is free, plus
 * OpenMP's team when threads > 1: ggml's compute); `mainCpuMs`: JavaScript (batching, sampling
 * calls, the chat layer); `runQueueWaitMs`: time any thread sat runnable without a CPU (contention).
 * At 1 thread, wall - workersCpu - mainCpu is time nobody ran: the thread handoffs.
 */
export interface TokenSplit {
    wallMs: number;
    workersCpuMs: number;
    mainCpuMs: number;
    runQueueWaitMs: number;
}

type TaskClock = Map<number, {name: string; cpuNs: number; waitNs: number}>;

/** Reads every thread's schedstat (a few µs per thread); Linux only, empty elsewhere. */
function taskClock(): TaskClock {
    const out: TaskClock = new Map();
    let tids: string[];
    try { tids = readdirSync("/proc/self/task"); } catch { return out; }
    for (const tid of tids) {
        try {
            const [cpu, wait] = readFileSync(`/proc/self/task/${tid}/schedstat`, "utf8").split(" ");
            const name = readFileSync(`/proc/self/task/${tid}/comm`, "utf8").trim();
            out.set(Number(tid), {name, cpuNs: Number(cpu), waitNs: Number(wait)});
        } catch {
            // the thread ended between readdir and read
        }
    }
    return out;
}

function taskSpan(from: TaskClock, to: TaskClock): ThreadSpan[] {
    const spans: ThreadSpan[] = [];
    for (const [tid, b] of to) {
        const a = from.get(tid) ?? {cpuNs: 0, waitNs: 0};
        spans.push({tid, name: b.name, cpuMs: (b.cpuNs - a.cpuNs) / 1e6, waitMs: (b.waitNs - a.waitNs) / 1e6});
    }
    return spans.sort((x, y) => y.cpuMs - x.cpuMs);
}

export function splitPerToken(samples: NodeSample[]): TokenSplit | null {
    let tokens = 0;
    let wall = 0;
    let workers = 0;
    let main = 0;
    let wait = 0;
    for (const s of samples) {
        if (s.threads.length === 0) return null;
        tokens += s.tokens - 1;
        wall += s.genMs;
        for (const t of s.threads) {
            if (t.tid === process.pid) main += t.cpuMs;
            else workers += t.cpuMs;
            wait += t.waitMs;
        }
    }
    if (tokens <= 0) return null;
    const per = (x: number): number => Math.round((x / tokens) * 1000) / 1000;
    return {wallMs: per(wall), workersCpuMs: per(workers), mainCpuMs: per(main), runQueueWaitMs: per(wait)};
}

export interface NodeResult {
    buildType: string;
    llamaMaxThreads: number;
    samples: NodeSample[];
    /** median of (tokens - 1) / genMs */
    genTps: number;
    ttftMs: number;
    /** CPU % of one core used during 1 s of idling after the run */
    idleCpuPercent: number;
    /** where a token's time went, over all samples (null where /proc is not there) */
    perToken: TokenSplit | null;
    /** llama_decode timed from inside the process by bench/engine/decode-timer.c (null without it) */
    decodeTimer: DecodeTimerReport | null;
    /** UV_THREADPOOL_SIZE the child ran with */
    uvPool?: number;
}

/** What bench/engine/decode-timer.c writes at exit. */
export interface DecodeTimerReport {
    calls: number;
    singleTokenDecodes: number;
    wallUs: {mean: number; p10: number; p50: number; p90: number};
    threadCpuUs: {mean: number; p50: number};
    cpuChanges: number;
    midDecodeMigrations: number;
    graphsReused: number;
    threads: Array<{tid: number; decodes: number}>;
}

const SYSTEM = "You are a helpful assistant running on a small edge device. Answer briefly and precisely.";

function median(xs: number[]): number {
    const s = [...xs].sort((a, b) => a - b);
    const mid = Math.floor(s.length / 2);
    return s.length % 2 === 1 ? s[mid] ?? 0 : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

async function lowLevel(s: NodeSettings): Promise<{llama: Llama; context: LlamaContext; sample: () => Promise<NodeSample>}> {
    const llama = await getLlama({gpu: false, build: "never", cmakeOptions: NATIVE_BUILD_CMAKE_OPTIONS, logLevel: LlamaLogLevel.warn, logger: () => undefined,
        ...(s.maxThreads === "threads" ? {maxThreads: s.threads} : {})});
    const model = await llama.loadModel({modelPath: s.modelPath, gpuLayers: 0});
    const threads = s.contextThreads === "number" ? {threads: s.threads}
        : s.contextThreads === "idealMin" ? {threads: {ideal: s.threads, min: 1}} : {};
    const context = await model.createContext({contextSize: s.contextSize, sequences: 1, batchSize: s.batchSize, ...threads});
    const sequence = context.getSequence();
    const promptTokens = model.tokenize(s.prompt);
    const completion = s.mode === "completion" ? new LlamaCompletion({contextSequence: sequence}) : null;
    const sample = async (): Promise<NodeSample> => {
        await sequence.clearHistory();
        const started = performance.now();
        let first = 0;
        let tokens = 0;
        let clock0: TaskClock = new Map();
        const onToken = (): void => {
            if (tokens === 0) {
                clock0 = taskClock();
                first = performance.now();
            }
            tokens++;
        };
        if (completion) {
            await completion.generateCompletion(s.prompt, {maxTokens: s.genTokens, temperature: 0,
                onToken: (t) => { for (let i = 0; i < t.length; i++) onToken(); }});
        } else if (s.mode === "evaluate") {
            for await (const _token of sequence.evaluate(promptTokens, {temperature: 0})) {
                onToken();
                if (tokens >= s.genTokens) break;
            }
        } else {
            // llama-bench's tg: the prompt, then one decode per token with no sampling at all
            await sequence.evaluateWithoutGeneratingNewTokens(promptTokens);
            let token: Token = promptTokens[promptTokens.length - 1] ?? (0 as Token);
            for (let i = 0; i < s.genTokens; i++) {
                await sequence.evaluateWithoutGeneratingNewTokens([token]);
                onToken();
                token = ((token + 1) % 200) as Token;
            }
        }
        const end = performance.now();
        const threads = taskSpan(clock0, taskClock());
        return {tokens, ttftMs: first - started, genMs: end - first, threads};
    };
    return {llama, context, sample};
}

async function engineMode(s: NodeSettings): Promise<{llama: Llama | null; stop: () => Promise<void>; sample: () => Promise<NodeSample>}> {
    const noop = (): void => undefined;
    const log = {error: noop, warn: noop, info: noop, debug: noop, child: () => log} as unknown as Logger;
    const engine = new Engine({log, options: {threads: s.threads, contextSize: s.contextSize, batchSize: s.batchSize, parallel: 1,
        systemPrompt: SYSTEM, sampling: {temperature: 0.7, topP: 0.8, topK: 20, presencePenalty: 1.5}}});
    await engine.start();
    await engine.load(s.modelPath);
    let n = 0;
    const sample = async (): Promise<NodeSample> => {
        const started = performance.now();
        let first = 0;
        let clock0: TaskClock = new Map();
        const r = await engine.generate({id: `bench-${n++}`, options: {prompt: s.prompt, maxTokens: s.genTokens, thinking: false, seed: 1},
            signal: new AbortController().signal, onFirstToken: () => {
                clock0 = taskClock();
                first = performance.now();
            }});
        const end = performance.now();
        const threads = taskSpan(clock0, taskClock());
        return {tokens: r.completionTokens, ttftMs: first - started, genMs: end - first, threads};
    };
    return {llama: engine.runtime, stop: () => engine.stop(), sample};
}

async function main(): Promise<void> {
    const s = JSON.parse(process.argv[2] ?? "{}") as NodeSettings;
    let llama: Llama | null;
    let stop: () => Promise<void>;
    let sample: () => Promise<NodeSample>;
    if (s.mode === "engine") {
        ({llama, stop, sample} = await engineMode(s));
    } else {
        const low = await lowLevel(s);
        llama = low.llama;
        sample = low.sample;
        stop = () => low.llama.dispose();
    }
    await sample(); // warm-up: a process's first generation is 10-30 % slower (docs/DESIGN.md)
    const samples: NodeSample[] = [];
    const started = performance.now();
    while (samples.length < s.reps && (samples.length < 2 || performance.now() - started < s.maxSeconds * 1000)) {
        samples.push(await sample());
    }
    // CPU burnt while idle after the last token: spinning OpenMP workers show up here (an edge
    // device must not heat while it waits for requests).
    const cpu0 = process.cpuUsage();
    await new Promise((r) => setTimeout(r, 1000));
    const cpu1 = process.cpuUsage(cpu0);
    const result: NodeResult = {
        idleCpuPercent: (cpu1.user + cpu1.system) / 1e4,
        buildType: llama?.buildType ?? "unknown",
        llamaMaxThreads: llama?.maxThreads ?? 0,
        samples,
        genTps: median(samples.map((x) => (x.tokens - 1) / (x.genMs / 1000))),
        ttftMs: median(samples.map((x) => x.ttftMs)),
        perToken: splitPerToken(samples),
        decodeTimer: null,
        uvPool: Number(process.env.UV_THREADPOOL_SIZE ?? 4)
    };
    await stop();
    process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
});
