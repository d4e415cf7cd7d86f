/**
 * The baseline: node-llama-cpp driven directly, the way src/inference/engine.ts drives it (same
 * getLlama options, one context with `parallel` sequences, a fresh LlamaChatSession per request on a
 * pooled sequence with QwenChatWrapper 3.5 and thoughts discouraged, the same sampling options,
 * clearHistory afterwards) but with nothing else around it: no MQTT, no journal, no scheduler.
 */
import {getLlama, LlamaChatSession, LlamaLogLevel, QwenChatWrapper, type Llama, type LlamaContext, type LlamaContextSequence} from "node-llama-cpp";
import {performance} from "node:perf_hooks";

export interface GenerationSettings {
    modelPath: string;
    threads: number;
    contextSize: number;
    batchSize: number;
    /** sequences of the context, as inference.parallel */
    parallel: number;
    maxTokens: number;
    prompt: string;
    systemPrompt: string;
    seed: number;
    /** the daemon's defaults; with temperature 0 sampling is greedy and these do not change the tokens */
    topP: number;
    topK: number;
}

export interface RawSample {
    completionTokens: number;
    /** start of the request (session creation) to the first token */
    ttftMs: number;
    /**
     * start to the first answer text node-llama-cpp hands out (onResponseChunk): what a stream can
     * send first; node-llama-cpp may hold text back a few tokens while it checks for stop triggers
     */
    firstTextMs: number;
    /** start to the answer being complete (sequence cleared and back in the pool, as in the engine) */
    totalMs: number;
    clearHistoryMs: number;
    text: string;
}

export interface RawRound {
    concurrency: number;
    samples: RawSample[];
    /** first start to last end */
    wallMs: number;
    tokensPerSecond: number;
    /** CPU time the generating process spent on the round (set by the caller) */
    cpuSeconds?: number;
}

export class RawEngine {
    private llama: Llama | null = null;
    private context: LlamaContext | null = null;
    private readonly free: LlamaContextSequence[] = [];
    private readonly wrapper = new QwenChatWrapper({variation: "3.5", thoughts: "discourage"});

    public constructor(private readonly s: GenerationSettings) {}

    public async start(): Promise<void> {
        const s = this.s;
        // The engine's options, its logger included (it drops what the daemon would log at debug).
        this.llama = await getLlama({gpu: false, build: "never", maxThreads: s.threads, logLevel: LlamaLogLevel.warn, logger: () => undefined});
        const model = await this.llama.loadModel({modelPath: s.modelPath, gpuLayers: 0});
        this.context = await model.createContext({contextSize: s.contextSize, sequences: s.parallel, batchSize: s.batchSize, threads: s.threads});
        for (let i = 0; i < s.parallel; i++) this.free.push(this.context.getSequence());
    }

    public async stop(): Promise<void> {
        await this.llama?.dispose();
        this.llama = null;
    }

    /** `concurrency` requests at once (each on its own sequence); tokens/s over the wall time. */
    public async round(concurrency: number, maxTokens = this.s.maxTokens): Promise<RawRound> {
        const started = performance.now();
        const samples = await Promise.all(Array.from({length: concurrency}, () => this.generate(maxTokens)));
        const wallMs = performance.now() - started;
        const tokens = samples.reduce((a, x) => a + x.completionTokens, 0);
        return {concurrency, samples, wallMs, tokensPerSecond: tokens / (wallMs / 1000)};
    }

    public async generate(maxTokens = this.s.maxTokens): Promise<RawSample> {
        const s = this.s;
        const sequence = this.free.pop();
        if (!sequence) throw new Error("no free sequence: concurrency above parallel");
        const started = performance.now();
        let ttftMs = -1;
        let firstTextMs = -1;
        let completionTokens = 0;
        let text = "";
        let clearHistoryMs = 0;
        try {
            const session = new LlamaChatSession({contextSequence: sequence, chatWrapper: this.wrapper, autoDisposeSequence: false,
                systemPrompt: s.systemPrompt});
            session.setChatHistory([{type: "system", text: s.systemPrompt}]);
            try {
                const result = await session.promptWithMeta(s.prompt, {
                    maxTokens, temperature: 0, topP: s.topP, topK: s.topK, seed: s.seed,
                    budgets: {thoughtTokens: 0},
                    // The engine always passes its job's signal (never aborted here).
                    signal: new AbortController().signal, stopOnAbortSignal: true,
                    // The engine's two callbacks, so node-llama-cpp does the same work in both paths.
                    onToken: (tokens) => {
                        if (ttftMs < 0) ttftMs = performance.now() - started;
                        completionTokens += tokens.length;
                    },
                    onResponseChunk: (chunk) => {
                        if (chunk.type !== "segment" && chunk.text !== "" && firstTextMs < 0) firstTextMs = performance.now() - started;
                    }
                });
                text = result.responseText;
            } finally {
                session.dispose({disposeSequence: false});
            }
        } finally {
            const clearStart = performance.now();
            await sequence.clearHistory();
            clearHistoryMs = performance.now() - clearStart;
            this.free.push(sequence);
        }
        return {completionTokens, ttftMs, firstTextMs, totalMs: performance.now() - started, clearHistoryMs, text};
    }
}
