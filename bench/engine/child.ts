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
}

export interface NodeSample {
    tokens: number;
    ttftMs: number;
    /** first token to last: generation only, comparable with llama-bench's tg */
    genMs: number;
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
        const onToken = (): void => {
            if (tokens === 0) first = performance.now();
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
        return {tokens, ttftMs: first - started, genMs: end - first};
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
        const r = await engine.generate({id: `bench-${n++}`, prompt: s.prompt, maxTokens: s.genTokens, thoughtBudget: false,
            signal: new AbortController().signal, seed: 1, onFirstToken: () => { first = performance.now(); }});
        const end = performance.now();
        return {tokens: r.completionTokens, ttftMs: first - started, genMs: end - first};
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
    await sample(); // warm-up: a process's first generation is 10-30 % slower (FACTS.md)
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
        ttftMs: median(samples.map((x) => x.ttftMs))
    };
    await stop();
    process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
});
