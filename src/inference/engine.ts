/**
 * The inference engine: node-llama-cpp with one model, one context and a pool of `parallel`
 * sequences (sequence-pool.ts). Each generation takes the sequence that already holds the longest
 * part of its prompt, brings it to the prompt's stable head (checkpointed, for prefix reuse), and runs
 * the chat on it with Qwen3.5's chat wrapper (thinking decided per request). The sequence keeps its
 * tokens for the next request; a request only ever reuses tokens identical to its own prompt's.
 */
import {randomBytes} from "node:crypto";
import {
    getLlama, LlamaChat, LlamaLogLevel, LlamaText, QwenChatWrapper, SpecialTokensText,
    type ChatHistoryItem, type ChatModelFunctionCall, type ChatModelFunctions, type ChatModelResponse, type ChatModelSegment, type GbnfJsonSchema,
    type LlamaTextJSON, type Llama, type LlamaContext, type LlamaContextSequence, type LlamaJsonSchemaGrammar, type LlamaModel, type Token
} from "node-llama-cpp";
import {grammarSchema, validateAgainstSchema} from "../actions/schema.js";
import {ModelUnavailableError, RequestError} from "../errors.js";
import {collectGarbage} from "../system/gc.js";
import {withTimeout} from "../util/timeout.js";
import {thoughtBudget, type GenerationOptions, type ToolCall, type ToolDefinition} from "./generation.js";
import {SequencePool, type PoolStats} from "./sequence-pool.js";
import type {Logger} from "../log.js";

/**
 * The cmake options of the local build `npm run rebuild:native` makes (OpenMP on, this CPU's
 * instructions). getLlama loads a local build only when its options match, so the daemon uses that
 * build when it exists and node-llama-cpp's prebuilt binary otherwise (docs/ENGINE-SPEED.md: the
 * prebuilt has no OpenMP and starts fresh threads for every decode).
 */
export const NATIVE_BUILD_CMAKE_OPTIONS: Readonly<Record<string, string>> = {GGML_OPENMP: "ON"};

/**
 * Model responses a request may take when device actions run: each round that calls only actions runs them
 * and continues; past this many the generation ends with what it has (src/actions/executor.ts caps the calls).
 */
const MAX_TOOL_ROUNDS = 6;

/** How long stop() waits for node-llama-cpp to release its runtime. */
const DISPOSE_WAIT_MS = 2000;

export interface SamplingDefaults {
    temperature: number;
    topP: number;
    topK: number;
    presencePenalty: number;
}

export interface EngineOptions {
    /** generation threads; never left to node-llama-cpp's default (docs/DESIGN.md: 40-60x slower) */
    threads: number;
    /** tokens per sequence */
    contextSize: number;
    batchSize: number;
    /** sequences that generate at the same time */
    parallel: number;
    systemPrompt: string;
    sampling: SamplingDefaults;
    /** map the model file (default false: read into memory, so repacked weights are not held twice; docs/MEMORY.md) */
    mmap?: boolean;
    /** prompt-reuse checkpoints per sequence (inference.promptCheckpoints); 0: every request starts from a cleared sequence */
    promptCheckpoints?: number;
}

export interface EngineDeps {
    log: Logger;
    options: EngineOptions;
}

export interface GenerateParams {
    id: string;
    /** what to generate: the request's validated fields, as they came from the wire */
    options: GenerationOptions;
    signal: AbortSignal;
    /** answer text as it is generated */
    onTextDelta?: (delta: string) => void;
    /** thought text as it is generated */
    onThoughtDelta?: (delta: string) => void;
    /** called once, when the first token arrives */
    onFirstToken?: () => void;
    /** device actions granted to this request: offered to the model beside the client's tools */
    actions?: ToolDefinition[];
    /** runs a call to a granted action; what it returns is fed back to the model as the call's result */
    runAction?: (call: {name: string; arguments: unknown}) => Promise<string>;
}

export interface GenerateResult {
    text: string;
    thinking: string | null;
    json: unknown;
    /** calls to the client's tools: when there are any, finishReason is "tool_calls" */
    toolCalls: ToolCall[];
    finishReason: "stop" | "length" | "aborted" | "tool_calls";
    promptTokens: number;
    /** every token the model generated for this request: thoughts, answer and the end token (maxTokens at "length") */
    completionTokens: number;
    /** of completionTokens, those inside the thought segment */
    thinkingTokens: number;
    /** prompt tokens taken from what the sequence held instead of evaluated again */
    cachedPromptTokens: number;
    /** from start of generation (prompt evaluation included) to the first generated token, thought or answer */
    ttftMs: number | null;
    totalMs: number;
}

export interface EngineStats {
    modelPath: string;
    contextSize: number;
    threads: number;
    parallel: number;
    busySequences: number;
    /** prompt reuse: requests that reused tokens, requests that did not, tokens reused, checkpoint memory now */
    promptCache: PoolStats;
}

/**
 * Tool results are text (a client's "tool" message, an action's outcome); Qwen's template puts a result in
 * <tool_response> as it is, and QwenChatWrapper does so with this option (else it renders a string as a JSON
 * string literal, quotes and escapes included). An internal option of node-llama-cpp 3.21.1, which its own
 * template detection uses for Qwen templates; re-check on upgrade (test/integration/tools.test.ts renders it).
 */
const FLAT_TOOL_RESULTS = {_flatFunctionResultString: true} as object;

export class Engine {
    private readonly deps: EngineDeps;
    private llama: Llama | null = null;
    private model: LlamaModel | null = null;
    private context: LlamaContext | null = null;
    private pool: SequencePool | null = null;
    private modelPath = "";
    // keepOnlyLastThought false: earlier turns keep the thought block they were evaluated with
    // (thoughtAsEvaluated), so a conversation's history re-renders to the very tokens a sequence holds
    private readonly wrappers = {
        off: new QwenChatWrapper({variation: "3.5", thoughts: "discourage", keepOnlyLastThought: false, ...FLAT_TOOL_RESULTS}),
        on: new QwenChatWrapper({variation: "3.5", thoughts: "auto", keepOnlyLastThought: false, ...FLAT_TOOL_RESULTS})
    };
    /** the text of recent client tool calls as generated, so their continuation renders (and reuses) the same tokens */
    private readonly rawCalls = new RawCalls();
    /** the `<|im_start|>` token: a chat turn's first */
    private turnStart: Token | null = null;
    private readonly grammars = new Map<string, LlamaJsonSchemaGrammar<never>>();

    public constructor(deps: EngineDeps) {
        this.deps = deps;
    }

    /** Starts the runtime (no model yet): `load` follows, once the model file is known. */
    public async start(): Promise<void> {
        const {options, log} = this.deps;
        this.llama = await getLlama({
            gpu: false, build: "never", cmakeOptions: {...NATIVE_BUILD_CMAKE_OPTIONS}, maxThreads: options.threads, logLevel: LlamaLogLevel.warn,
            logger: (level, message) => {
                const text = message.trim();
                if (text === "") return;
                if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) log.error("llama.cpp", {detail: text});
                else log.debug("llama.cpp", {detail: text});
            }
        });
    }

    /** The runtime, for memory estimates that must match what `load` will allocate. */
    public get runtime(): Llama | null {
        return this.llama;
    }

    /**
     * Loads a model and creates its context and sequences. With `ramCapBytes`, context creation that
     * would go past it throws (node-llama-cpp's InsufficientMemoryError), so the caller can fall back
     * to a smaller model instead of being OOM-killed.
     */
    public async load(modelPath: string, ramCapBytes: number | null = null): Promise<void> {
        const {options, log} = this.deps;
        if (!this.llama) throw new Error("engine not started");
        await this.unload();
        const started = Date.now();
        await this.llama.setRamCap(ramCapBytes);
        let model: LlamaModel;
        try {
            model = await this.llama.loadModel({modelPath, gpuLayers: 0, useMmap: options.mmap === true});
        } catch (err) {
            throw new ModelUnavailableError(`cannot load ${modelPath}: ${(err as Error).message}`, {cause: err});
        }
        try {
            this.context = await model.createContext({
                contextSize: options.contextSize,
                sequences: options.parallel,
                batchSize: options.batchSize,
                threads: options.threads
            });
        } catch (err) {
            await model.dispose();
            throw err;
        }
        this.model = model;
        this.modelPath = modelPath;
        this.turnStart = model.tokenize("<|im_start|>", true)[0] ?? null;
        this.pool = new SequencePool(this.context, options.parallel, options.promptCheckpoints ?? 0);
        // node-llama-cpp read the header's 248k-token vocabulary in JS: drop that garbage before serving
        collectGarbage();
        const libuvPool = libuvPoolSize();
        log.info("model loaded", {
            modelPath, ms: Date.now() - started, contextSize: this.context.contextSize,
            threads: options.threads, parallel: options.parallel, batchSize: options.batchSize, binary: this.llama.buildType,
            modelBytes: model.size, mmap: options.mmap === true, promptCheckpoints: options.promptCheckpoints ?? 0, libuvPool
        });
        if (libuvPool > 1 && options.threads > 1) {
            log.warn("libuv's thread pool has more than one thread: decodes hop between them and generation with more than one "
                + "thread can be several times slower; start qwen-edge through its launcher (dist/src/launcher.cjs, the qwen-edge "
                + "command) or set UV_THREADPOOL_SIZE=1 (docs/ENGINE-SPEED.md)", {libuvPool, threads: options.threads});
        }
    }

    /** Frees the model and its context (before a fallback to a smaller one, or at stop). */
    public async unload(): Promise<void> {
        const model = this.model;
        this.model = null;
        this.context = null;
        this.pool = null;
        this.grammars.clear();
        if (model) await model.dispose();
    }

    public async stop(): Promise<void> {
        await this.unload();
        const llama = this.llama;
        this.llama = null;
        if (!llama) return;
        // node-llama-cpp 3.21.1: a model that failed to load keeps a dispose lock on the runtime, released
        // only if that model is still reachable; once it is garbage-collected llama.dispose() never resolves
        // (measured: SIGTERM then hung until the exit timer, exit 1). The process is ending: don't wait.
        const disposed = await withTimeout(llama.dispose().then(() => true), DISPOSE_WAIT_MS, () => false);
        if (!disposed) this.deps.log.warn("llama runtime did not release in time; stopping without it", {waitedMs: DISPOSE_WAIT_MS});
    }

    public get contextSize(): number {
        return this.context?.contextSize ?? this.deps.options.contextSize;
    }

    public stats(): EngineStats {
        const o = this.deps.options;
        return {modelPath: this.modelPath, contextSize: this.contextSize, threads: o.threads, parallel: o.parallel,
            busySequences: this.pool?.busy ?? 0, promptCache: this.pool?.stats() ?? {hits: 0, misses: 0, reusedTokens: 0, checkpointBytes: 0}};
    }

    /** Runs one request on a free sequence. The scheduler never asks for more than `parallel` at once. */
    public async generate(params: GenerateParams): Promise<GenerateResult> {
        const model = this.model;
        const pool = this.pool;
        if (!model || !this.llama || !pool) throw new RequestError("model_unavailable", "the model is not loaded");
        const started = Date.now();
        const p = params.options;
        const budget = thoughtBudget(p.thinking, p.maxTokens);
        const chat = toChatHistory(p, this.deps.options.systemPrompt, (c) => this.rawCalls.recall(c));
        const wrapper = budget === false ? this.wrappers.off : this.wrappers.on;
        const functions = toFunctions([...(p.tools ?? []), ...(params.actions ?? [])]);
        const prompt = this.renderPrompt(model, wrapper, chat.history, functions);
        const sequence = pool.acquire(prompt);
        if (!sequence) throw new RequestError("model_unavailable", "no free sequence (more generations than inference.parallel)");
        let failed = true;
        try {
            const result = await this.runChat(model, sequence, params, {...chat, wrapper, budget, prompt, functions}, started);
            pool.record(result.cachedPromptTokens);
            failed = false;
            return result;
        } finally {
            // after an error the sequence's state is not trusted: the next request starts it afresh
            await pool.release(sequence, failed);
        }
    }

    private async runChat(model: LlamaModel, sequence: LlamaContextSequence, params: GenerateParams,
        chat: ChatInput & {wrapper: QwenChatWrapper; budget: false | number; prompt: Token[]; functions: ChatModelFunctions | undefined},
        started: number): Promise<GenerateResult> {
        const p = params.options;
        const {wrapper, budget, prompt, functions} = chat;
        const promptTokens = prompt.length;
        if (promptTokens + p.maxTokens > this.contextSize) {
            throw new RequestError("exceed_context_size",
                `prompt (${promptTokens} tokens) + maxTokens (${p.maxTokens}) exceeds the context size (${this.contextSize} tokens)`,
                {promptTokens, maxTokens: p.maxTokens, contextSize: this.contextSize});
        }
        const grammar = p.jsonSchema ? await this.grammarFor(p.jsonSchema) : undefined;
        // Every prompt token the sequence evaluates for this request, the head's included, is an input token but
        // the last one (its logits give the first answer token): what is not evaluated was reused.
        const inputTokensBefore = sequence.tokenMeter.usedInputTokens;
        let promptEvaluated: number | null = null;
        await this.pool!.prepare(sequence, prompt, this.stableHead(prompt));
        const llamaChat = new LlamaChat({contextSequence: sequence, chatWrapper: wrapper, autoDisposeSequence: false});
        let ttftMs: number | null = null;
        let thinkingTokens = 0;
        // Each sampled token needs one row of logits, so the sequence's "output" tokens count exactly what the model
        // generated, thoughts and the end token included; node-llama-cpp's onToken sees answer tokens only.
        const outputTokensBefore = sequence.tokenMeter.usedOutputTokens;
        const generated = (): number => sequence.tokenMeter.usedOutputTokens - outputTokensBefore;
        const firstToken = (): void => {
            if (ttftMs !== null) return;
            ttftMs = Date.now() - started;
            promptEvaluated = sequence.tokenMeter.usedInputTokens - inputTokensBefore + 1;
            params.onFirstToken?.();
        };
        const cached = (): number => Math.max(0, promptTokens - (promptEvaluated ?? (sequence.tokenMeter.usedInputTokens - inputTokensBefore + 1)));
        const thoughts: string[] = [];
        const texts: string[] = [];
        const toolCalls: ToolCall[] = [];
        const d = this.deps.options.sampling;
        const clientTools = new Map((p.tools ?? []).map((t) => [t.name, t]));
        let history = chat.history;
        try {
            let stopReason: string = "eogToken";
            // One round per model response: a round that calls only device actions runs them, feeds their results
            // back and goes on; a call to a client tool ends the generation (the client runs it).
            for (let round = 0; round < MAX_TOOL_ROUNDS; round++) {
                const remaining = p.maxTokens - generated();
                if (remaining <= 0) {
                    stopReason = "maxTokens";
                    break;
                }
                const result = await llamaChat.generateResponse(history, {
                    maxTokens: remaining,
                    temperature: p.temperature ?? d.temperature,
                    topP: p.topP ?? d.topP,
                    topK: p.topK ?? d.topK,
                    ...(p.minP !== undefined ? {minP: p.minP} : {}),
                    ...(p.seed !== undefined ? {seed: p.seed} : {}),
                    ...(d.presencePenalty > 0 ? {repeatPenalty: {presencePenalty: d.presencePenalty}} : {}),
                    ...(p.stop && p.stop.length > 0 ? {customStopTriggers: p.stop} : {}),
                    ...(grammar ? {grammar} : functions ? {functions} : {}),
                    budgets: {thoughtTokens: budget === false ? 0 : budget},
                    signal: params.signal,
                    stopOnAbortSignal: true,
                    onResponseChunk: (chunk) => {
                        if (chunk.tokens.length > 0) firstToken();
                        if (chunk.type === "segment") {
                            if (chunk.segmentType === "thought") {
                                thinkingTokens += chunk.tokens.length;
                                if (chunk.text !== "") {
                                    thoughts.push(chunk.text);
                                    params.onThoughtDelta?.(chunk.text);
                                }
                            }
                        } else if (chunk.text !== "") params.onTextDelta?.(chunk.text);
                    }
                });
                texts.push(result.response);
                stopReason = result.metadata.stopReason;
                const calls = result.functionCalls ?? [];
                if (stopReason !== "functionCalls" || calls.length === 0) break;
                firstToken(); // a call with no text before it is still the first output
                const results: unknown[] = [];
                for (const call of calls) {
                    if (clientTools.has(call.functionName)) {
                        const made: ToolCall = {id: `call-${randomBytes(6).toString("hex")}`, name: call.functionName, arguments: call.params};
                        const invalid = validateAgainstSchema(clientTools.get(call.functionName)?.parameters, call.params);
                        if (invalid !== null) made.error = invalid;
                        toolCalls.push(made);
                        this.rawCalls.keep(made, call.raw);
                        results.push(undefined);
                    } else {
                        results.push(params.runAction
                            ? await params.runAction({name: call.functionName, arguments: call.params})
                            : `refused: ${call.functionName} is not a tool of this request`);
                    }
                }
                if (toolCalls.length > 0) break;
                history = withCallResults(result.lastEvaluation.cleanHistory, calls, results);
            }
            const text = texts.join("");
            const finishReason = toolCalls.length > 0 ? "tool_calls" : stopReason === "abort" ? "aborted" : stopReason === "maxTokens" ? "length" : "stop";
            let json: unknown = undefined;
            if (grammar && finishReason === "stop") {
                try {
                    json = grammar.parse(text);
                } catch {
                    json = undefined; // a cut-off JSON answer is returned as text only
                }
            }
            return {text, thinking: thoughts.length > 0 ? thoughts.join("") : null, json, toolCalls,
                finishReason, promptTokens, completionTokens: generated(), thinkingTokens, cachedPromptTokens: cached(), ttftMs,
                totalMs: Date.now() - started};
        } catch (err) {
            // Aborted before the first token: node-llama-cpp throws the signal's reason.
            if (params.signal.aborted) {
                return {text: texts.join(""), thinking: null, json: undefined, toolCalls, finishReason: "aborted", promptTokens,
                    completionTokens: generated(), thinkingTokens, cachedPromptTokens: cached(), ttftMs, totalMs: Date.now() - started};
            }
            throw err;
        } finally {
            llamaChat.dispose({disposeSequence: false});
        }
    }

    /** The whole prompt as the chat wrapper renders it, tokenized (~2 ms for 1,000 tokens). */
    private renderPrompt(model: LlamaModel, wrapper: QwenChatWrapper, history: ChatHistoryItem[], functions: ChatModelFunctions | undefined): Token[] {
        const chatHistory = history.at(-1)?.type === "model" ? history : [...history, {type: "model" as const, response: []}];
        const {contextText} = wrapper.generateContextState({chatHistory, ...(functions ? {availableFunctions: functions} : {})});
        return contextText.tokenize(model.tokenizer);
    }

    /**
     * Where the prompt's stable head ends: the start of its last user turn (the turn before the assistant's
     * own), so the system prompt and earlier turns are the head a later request can share.
     */
    private stableHead(prompt: readonly Token[]): number {
        if (this.turnStart === null) return 0;
        let turns = 0;
        for (let i = prompt.length - 1; i >= 0; i--) {
            if (prompt[i] === this.turnStart && ++turns === 2) return i;
        }
        return 0;
    }

    private async grammarFor(schema: object): Promise<LlamaJsonSchemaGrammar<never>> {
        const key = JSON.stringify(schema);
        let grammar = this.grammars.get(key);
        if (!grammar) {
            try {
                grammar = await this.llama!.createGrammarForJsonSchema(schema as never);
            } catch (err) {
                throw new RequestError("invalid_request", `jsonSchema is not supported: ${(err as Error).message}`);
            }
            if (this.grammars.size >= 32) this.grammars.clear(); // bounded: schemas come from the network
            this.grammars.set(key, grammar);
        }
        return grammar;
    }
}

export interface ChatInput {
    /** the system prompt, earlier turns and the last user message, or a last model turn whose calls have results */
    history: ChatHistoryItem[];
    system: string;
}

/**
 * A request as node-llama-cpp chat history. An assistant message's toolCalls become the calls of its turn, and
 * the "tool" messages after it their results (by toolCallId): the history then ends in that turn, which the
 * model continues (QwenChatWrapper renders each result as Qwen's <tool_response>).
 */
export function toChatHistory(p: Pick<GenerationOptions, "prompt" | "messages" | "system">, defaultSystem: string,
    rawCall?: (call: ToolCall) => LlamaTextJSON | undefined): ChatInput {
    const turns = p.messages ?? [{role: "user" as const, content: p.prompt ?? ""}];
    const systemTurns = turns.filter((t) => t.role === "system");
    const system = p.system ?? (systemTurns.length > 0 ? systemTurns.map((t) => t.content).join("\n\n") : defaultSystem);
    const history: ChatHistoryItem[] = [{type: "system", text: system}];
    // the model turn that made calls; once their results are in, the model's next answer continues that turn
    let open: ChatModelResponse | null = null;
    let continues = false;
    for (const t of turns) {
        if (t.role === "system") continue;
        if (t.role === "user") {
            history.push({type: "user", text: t.content});
            open = null;
        } else if (t.role === "assistant") {
            const calls: ChatModelFunctionCall[] = (t.toolCalls ?? []).map((c, i) => {
                const raw = rawCall?.(c);
                return {type: "functionCall", name: c.name, params: c.arguments, result: undefined, startsNewChunk: i === 0,
                    ...(raw !== undefined ? {rawCall: raw} : {}), ...({toolCallId: c.id} as object)};
            });
            const response = [thoughtAsEvaluated(t.thinking ?? ""), ...(t.content !== "" || calls.length === 0 ? [t.content] : []), ...calls];
            if (open !== null && continues) open.response.push(...response);
            else {
                open = {type: "model", response};
                history.push(open);
            }
            continues = false;
        } else {
            // a tool's result: it answers one call of the assistant turn before it (the protocol checked that it does)
            const call = open?.response.find((r): r is ChatModelFunctionCall =>
                typeof r === "object" && r.type === "functionCall" && (r as {toolCallId?: string}).toolCallId === t.toolCallId);
            if (call) call.result = t.content;
            continues = true;
        }
    }
    return {history, system};
}

/**
 * The last RAW_CALLS client tool calls as the model wrote them (id -> text). The wrapper renders a call from
 * its arguments (JSON spaced its own way); the model may have written the same arguments with other spacing,
 * and a continuation that renders differently from what the sequence holds is evaluated again from the
 * previous turn. A call is rendered from here only when the client sends back the same name and arguments,
 * so a guessed id can never bring another request's call into a prompt. In memory only: after a restart a
 * continuation renders from the arguments (correct, just evaluated again).
 */
const RAW_CALLS = 256;
class RawCalls {
    private readonly calls = new Map<string, {key: string; raw: LlamaTextJSON}>();
    public keep(call: ToolCall, raw: LlamaTextJSON): void {
        this.calls.set(call.id, {key: JSON.stringify([call.name, call.arguments]), raw});
        if (this.calls.size > RAW_CALLS) this.calls.delete(this.calls.keys().next().value as string);
    }
    public recall(call: ToolCall): LlamaTextJSON | undefined {
        const kept = this.calls.get(call.id);
        return kept !== undefined && kept.key === JSON.stringify([call.name, call.arguments]) ? kept.raw : undefined;
    }
}

/** node-llama-cpp's functions (no handlers: the engine decides what runs) from tool definitions; undefined for none. */
function toFunctions(tools: readonly ToolDefinition[]): ChatModelFunctions | undefined {
    if (tools.length === 0) return undefined;
    return Object.fromEntries(tools.map((t) => [t.name, {...(t.description !== undefined ? {description: t.description} : {}),
        ...(t.parameters !== undefined ? {params: grammarSchema(t.parameters) as GbnfJsonSchema} : {})}]));
}

/** The last model turn of `history` with these calls and their results appended: the next round continues it. */
function withCallResults(history: ChatHistoryItem[], calls: ReadonlyArray<{functionName: string; params: unknown; raw: LlamaTextJSON}>,
    results: readonly unknown[]): ChatHistoryItem[] {
    const out = history.slice();
    const last = out.at(-1);
    const items: ChatModelFunctionCall[] = calls.map((c, i) => ({type: "functionCall", name: c.functionName, params: c.params, result: results[i],
        rawCall: c.raw, startsNewChunk: i === 0}));
    if (last?.type === "model") out[out.length - 1] = {...last, response: [...last.response, ...items]};
    else out.push({type: "model", response: items});
    return out;
}

/**
 * An earlier assistant turn's thought block, rendered as the model's turn was evaluated when it was
 * generated: `<think>\n\n</think>\n\n` when it did not think (what QwenChatWrapper puts before an answer
 * with thinking off), else the thought between the same markers. Qwen's own template drops earlier turns'
 * thoughts; rendering them as evaluated keeps a conversation's history (and a client's resent `messages`)
 * token-identical to what a sequence holds, so the next turn evaluates only what is new (docs/PROMPT-REUSE.md).
 */
function thoughtAsEvaluated(thinking: string): ChatModelSegment {
    const raw = thinking === ""
        ? LlamaText(new SpecialTokensText("<think>\n\n</think>\n\n"))
        : LlamaText([new SpecialTokensText("<think>\n"), thinking, new SpecialTokensText("\n</think>\n\n")]);
    return {type: "segment", segmentType: "thought", text: thinking, ended: true, raw: raw.toJSON()};
}

/**
 * The size of libuv's pool, read from UV_THREADPOOL_SIZE as libuv reads it at start (threadpool.c:
 * unset 4, atoi, 0 or garbage 1, capped at 1024, negative wraps to the cap).
 */
export function libuvPoolSize(env: NodeJS.ProcessEnv = process.env): number {
    const value = env.UV_THREADPOOL_SIZE;
    if (value === undefined) return 4;
    const n = Number.parseInt(value.trim(), 10);
    if (!Number.isFinite(n) || n === 0) return 1;
    return n < 0 ? 1024 : Math.min(n, 1024);
}
