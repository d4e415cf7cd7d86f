// Generates tiny GGUF models with the real qwen35 architecture (hybrid Gated DeltaNet + attention), our
// own byte-level BPE vocabulary, Qwen's special tokens and a ChatML-style template, so tests run the real
// engine without downloading weights. "scripted" answers a given text; "tool-call" calls a given tool with given
// arguments; "endless" never emits an end token.
import {createHash} from "node:crypto";
import {writeFile} from "node:fs/promises";
import {arr, bool, encodeGguf, f32, str, u32, type GgufMetaValue, type GgufTensorSpec} from "./gguf-writer.js";
import {answerChain, toolCallChain, type Chain, type ScriptedToolCall} from "./scripted-chain.js";
import {buildVocab, SCRIPTED_ANSWER, type Vocab} from "./tiny-vocab.js";

export {buildVocab, SCRIPTED_ANSWER, SPECIAL_TOKENS, type Vocab} from "./tiny-vocab.js";

export type TinyModelKind = "random" | "scripted" | "endless" | "tool-call";
export interface TinyQwen35Options {
    kind?: TinyModelKind;          // default "random"
    seed?: number;                 // PRNG seed, deterministic output; default 1
    hidden?: number;               // default 64
    layers?: number;               // default 4 (full attention every 4th layer)
    feedForward?: number;          // default 2*hidden
    contextLength?: number;        // default 4096
    merges?: number;               // number of extra BPE merges beyond the 256 byte tokens; default 200
    weightType?: "f32" | "f16";    // 2-D weights; default f16
    name?: string;                 // general.name
    /** only the header (no tensor data): a cheap fixture for readGgufFileInfo / memory estimates, even for big shapes */
    headerOnly?: boolean;
    /** scripted: the answer (default SCRIPTED_ANSWER); any text, repeated tokens included (scripted-chain.ts) */
    text?: string;
    /** tool-call (required there): the call the model makes, in QwenChatWrapper 3.5's syntax (scripted-chain.ts) */
    toolCall?: ScriptedToolCall;
}

// Our own minimal ChatML-style template (thinking on unless enable_thinking is false), written for this project.
const CHAT_TEMPLATE = [
    "{%- for message in messages -%}",
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}",
    "{%- endfor -%}",
    "{%- if add_generation_prompt -%}",
    "{{- '<|im_start|>assistant\\n' -}}",
    "{%- if enable_thinking is defined and not enable_thinking -%}",
    "{{- '<think>\\n\\n</think>\\n\\n' -}}",
    "{%- else -%}",
    "{{- '<think>\\n' -}}",
    "{%- endif -%}",
    "{%- endif -%}"
].join("\n");

/** A small seeded PRNG (uniform in [0, 1)): deterministic weights without a dependency. */
export function mulberry32(seed: number): () => number {
    let a = seed >>> 0;
    return () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

/** One independent PRNG stream per tensor, so a tensor's values do not depend on the tensor order. */
function tensorRandom(seed: number, name: string): () => number {
    let h = 0x811c9dc5 ^ Math.imul(seed, 0x9e3779b1);
    for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
    return mulberry32(h);
}

type RowOverrides = Map<number, Float32Array>;

interface Shape {
    hidden: number; layers: number; ff: number; vocab: number; headDim: number; heads: number; kvHeads: number;
    state: number; rank: number; groups: number; conv: number;
}

function shapeFor(hidden: number, layers: number, ff: number, vocab: number): Shape {
    if (!Number.isInteger(hidden) || hidden < 64 || hidden % 64 !== 0) throw new RangeError("hidden must be a multiple of 64");
    // llama.cpp aborts (GGML_ASSERT) on a qwen35 model without any attention layer: it needs one KV cache layer
    if (!Number.isInteger(layers) || layers < 4) throw new RangeError("layers must be >= 4");
    if (!Number.isInteger(ff) || ff < 1) throw new RangeError("feedForward must be >= 1");
    // proportions follow the real models: query dim = 2 x hidden, DeltaNet value dim = hidden
    const headDim = hidden >= 256 ? 64 : 32;
    const heads = (2 * hidden) / headDim;
    const state = hidden >= 256 ? 32 : 16;
    const rank = hidden / state;
    return {hidden, layers, ff, vocab, headDim, heads, kvHeads: heads / 2, state, rank, groups: rank / 2, conv: 4};
}

const isAttentionLayer = (i: number): boolean => (i + 1) % 4 === 0;

function buildTensors(shape: Shape, weightType: "f32" | "f16", seed: number, outputScale: number,
    embdRows: RowOverrides, outRows: RowOverrides): GgufTensorSpec[] {
    const {hidden: h, ff, vocab} = shape;
    const tensors: GgufTensorSpec[] = [];
    // uniform values in [lo, hi); rows listed in `rows` (of width dims[0]) are replaced afterwards
    const add = (name: string, dims: number[], lo: number, hi: number, rows?: RowOverrides, type?: "f32" | "f16"): void => {
        const rnd = tensorRandom(seed, name);
        const width = dims[0] ?? 1;
        tensors.push({name, dims, type: type ?? (dims.length > 1 ? weightType : "f32"), fill: (chunk, start) => {
            for (let i = 0; i < chunk.length; i++) chunk[i] = lo === hi ? lo : lo + (hi - lo) * rnd();
            for (const [row, values] of rows ?? []) {
                const from = Math.max(row * width, start);
                const to = Math.min((row + 1) * width, start + chunk.length);
                for (let g = from; g < to; g++) chunk[g - start] = values[g - row * width] ?? 0;
            }
        }});
    };
    const weight = (name: string, dims: number[], scale = 1): void => {
        const a = (scale * Math.sqrt(3)) / Math.sqrt(dims[0] ?? 1); // variance 1/fan_in
        add(name, dims, -a, a);
    };
    add("token_embd.weight", [h, vocab], -1, 1, embdRows);
    add("output_norm.weight", [h], 1, 1);
    const outAmp = 2 / Math.sqrt(h);
    add("output.weight", [h, vocab], -outAmp, outAmp, outRows);
    const keyDim = shape.state * shape.groups;
    const valueDim = shape.state * shape.rank;
    for (let i = 0; i < shape.layers; i++) {
        const p = `blk.${i}.`;
        add(`${p}attn_norm.weight`, [h], 1, 1);
        add(`${p}post_attention_norm.weight`, [h], 1, 1);
        if (isAttentionLayer(i)) {
            weight(`${p}attn_q.weight`, [h, shape.heads * shape.headDim * 2]);
            weight(`${p}attn_k.weight`, [h, shape.kvHeads * shape.headDim]);
            weight(`${p}attn_v.weight`, [h, shape.kvHeads * shape.headDim]);
            weight(`${p}attn_output.weight`, [shape.heads * shape.headDim, h], outputScale);
            add(`${p}attn_q_norm.weight`, [shape.headDim], 1, 1);
            add(`${p}attn_k_norm.weight`, [shape.headDim], 1, 1);
        } else {
            weight(`${p}attn_qkv.weight`, [h, 2 * keyDim + valueDim]);
            weight(`${p}attn_gate.weight`, [h, valueDim]);
            const convAmp = 1 / Math.sqrt(shape.conv);
            add(`${p}ssm_conv1d.weight`, [shape.conv, 2 * keyDim + valueDim], -convAmp, convAmp, undefined, "f32");
            add(`${p}ssm_dt.bias`, [shape.rank], -1, 1);
            add(`${p}ssm_a`, [shape.rank], -2, -0.5); // holds -exp(A_log): must be negative
            weight(`${p}ssm_beta.weight`, [h, shape.rank]);
            weight(`${p}ssm_alpha.weight`, [h, shape.rank]);
            add(`${p}ssm_norm.weight`, [shape.state], 1, 1);
            weight(`${p}ssm_out.weight`, [valueDim, h], outputScale);
        }
        weight(`${p}ffn_gate.weight`, [h, ff]);
        weight(`${p}ffn_up.weight`, [h, ff]);
        weight(`${p}ffn_down.weight`, [ff, h], outputScale);
    }
    return tensors;
}

function metadata(shape: Shape, vocab: Vocab, opts: {name: string; weightType: string; contextLength: number}): Record<string, GgufMetaValue> {
    const ropeHalf = shape.headDim / 8; // rotary on a quarter of each head, as in Qwen3.5
    const third = Math.floor(ropeHalf / 3);
    const a = "qwen35";
    return {
        "general.architecture": str(a),
        "general.type": str("model"),
        "general.name": str(opts.name),
        "general.file_type": u32(opts.weightType === "f16" ? 1 : 0),
        "general.quantization_version": u32(2),
        [`${a}.block_count`]: u32(shape.layers),
        [`${a}.context_length`]: u32(opts.contextLength),
        [`${a}.embedding_length`]: u32(shape.hidden),
        [`${a}.feed_forward_length`]: u32(shape.ff),
        [`${a}.attention.head_count`]: u32(shape.heads),
        [`${a}.attention.head_count_kv`]: u32(shape.kvHeads),
        [`${a}.attention.key_length`]: u32(shape.headDim),
        [`${a}.attention.value_length`]: u32(shape.headDim),
        [`${a}.attention.layer_norm_rms_epsilon`]: f32(1e-6),
        [`${a}.rope.freq_base`]: f32(1e7),
        [`${a}.rope.dimension_count`]: u32(2 * ropeHalf),
        [`${a}.rope.dimension_sections`]: arr("i32", [ropeHalf - 2 * third, third, third, 0]),
        [`${a}.ssm.conv_kernel`]: u32(shape.conv),
        [`${a}.ssm.state_size`]: u32(shape.state),
        [`${a}.ssm.group_count`]: u32(shape.groups),
        [`${a}.ssm.time_step_rank`]: u32(shape.rank),
        [`${a}.ssm.inner_size`]: u32(shape.state * shape.rank),
        [`${a}.full_attention_interval`]: u32(4),
        ...tokenizerMetadata(vocab)
    };
}

/** The tokenizer keys of a qwen35 GGUF: byte-level BPE (gpt2) with Qwen's pre-tokenizer and our chat template. */
export function tokenizerMetadata(vocab: Vocab): Record<string, GgufMetaValue> {
    return {
        "tokenizer.ggml.model": str("gpt2"),
        "tokenizer.ggml.pre": str("qwen35"),
        "tokenizer.ggml.tokens": arr("string", vocab.tokens),
        "tokenizer.ggml.token_type": arr("i32", vocab.types),
        "tokenizer.ggml.merges": arr("string", vocab.merges),
        "tokenizer.ggml.eos_token_id": u32(vocab.id.get("<|im_end|>") ?? 0),
        "tokenizer.ggml.padding_token_id": u32(vocab.id.get("<|endoftext|>") ?? 0),
        "tokenizer.ggml.bos_token_id": u32(vocab.id.get("<|endoftext|>") ?? 0),
        "tokenizer.ggml.add_bos_token": bool(false),
        "tokenizer.chat_template": str(CHAT_TEMPLATE)
    };
}

/** Embedding and output rows for a chain: a successor's logit is gain * sqrt(hidden), far above any random row's. */
function chainRows(chain: Chain, hidden: number): {embd: RowOverrides; out: RowOverrides} {
    const gains = [8, 4]; // a second choice stays far above the random rows and far below the first
    const embd: RowOverrides = new Map();
    const out: RowOverrides = new Map();
    [...chain].forEach(([from, successors], axis) => {
        const e = new Float32Array(hidden);
        e[axis] = Math.sqrt(hidden); // RMS 1, like the random rows
        embd.set(from, e);
        successors.forEach((to, rank) => {
            const o = out.get(to) ?? new Float32Array(hidden);
            o[axis] = gains[rank] ?? 0;
            out.set(to, o);
        });
    });
    return {embd, out};
}

export function buildTinyQwen35(options: TinyQwen35Options = {}): Buffer {
    const kind = options.kind ?? "random";
    if (options.text !== undefined && kind !== "scripted") throw new Error("text is for the scripted kind");
    if ((options.toolCall !== undefined) !== (kind === "tool-call")) throw new Error("the tool-call kind needs toolCall, and only it takes one");
    const merges = options.merges ?? 200;
    const vocab = buildVocab(merges);
    // chains may add tokens of the model's own to the vocabulary: build them before the shape
    const chain = kind === "scripted" ? answerChain(options.text ?? SCRIPTED_ANSWER, vocab)
        : options.toolCall ? toolCallChain(options.toolCall, vocab) : null;
    let hidden = options.hidden ?? 64;
    if (chain && chain.size > hidden) {
        const needed = Math.ceil(chain.size / 64) * 64;
        if (options.hidden !== undefined) throw new Error(`${kind} model: its chain passes through ${chain.size} tokens, one axis each: use hidden >= ${needed}`);
        hidden = needed;
    }
    const opts: Required<Omit<TinyQwen35Options, "text" | "toolCall">> = {
        kind,
        seed: options.seed ?? 1,
        hidden,
        layers: options.layers ?? 4,
        feedForward: options.feedForward ?? 2 * hidden,
        contextLength: options.contextLength ?? 4096,
        merges,
        weightType: options.weightType ?? "f16",
        name: options.name ?? `qwen-edge tiny qwen35 ${kind}`,
        headerOnly: options.headerOnly ?? false
    };
    const shape = shapeFor(hidden, opts.layers, opts.feedForward, vocab.tokens.length);
    let embd: RowOverrides = new Map();
    let out: RowOverrides = new Map();
    if (chain) {
        ({embd, out} = chainRows(chain, hidden));
    } else if (kind === "endless") {
        // zero logits for every control token: greedy decoding then always prefers some random text token
        vocab.types.forEach((t, id) => { if (t === 3) out.set(id, new Float32Array(hidden)); });
    }
    // chains: layer outputs nearly vanish, so the current token alone decides the next one
    const outputScale = chain ? 0.01 : 1;
    const tensors = buildTensors(shape, opts.weightType, opts.seed, outputScale, embd, out);
    return encodeGguf(metadata(shape, vocab, opts), tensors, {headerOnly: opts.headerOnly});
}

export async function writeTinyQwen35(path: string, options?: TinyQwen35Options): Promise<{path: string; bytes: number; sha256: string}> {
    const data = buildTinyQwen35(options);
    await writeFile(path, data);
    return {path, bytes: data.length, sha256: createHash("sha256").update(data).digest("hex")};
}
