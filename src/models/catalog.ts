/**
 * The Qwen3.5 small models qwen-edge knows: variants, quantizations, Hugging Face file URIs, and the
 * numbers used when a GGUF header cannot be read (offline). Pure: no I/O.
 *
 * Architecture numbers are those of the published `config.json` `text_config` of Qwen/Qwen3.5-{0.8B,2B,4B,9B}
 * (the text model only; the vision tower ships as a separate mmproj file that qwen-edge does not load).
 * Cross-checks: they give 0.75 / 1.88 / 4.21 / 8.95 B parameters, and header-only GGUFs built from them
 * estimate Q8_0 weights within 0.1 % (4B) and 4 % (0.8B) of published files.
 */

import {qwen35Tensors, GGML_TYPES, tensorTypeBytes} from "./qwen35-tensors.js";
import {repackCost, type CpuSimd} from "./repack.js";

export type ModelVariant = "0.8b" | "2b" | "4b" | "9b";
export type Quantization = "Q4_K_M" | "Q8_0";

/** Smallest first: the planner walks this list backwards to find the largest that fits. */
export const MODEL_VARIANTS: readonly ModelVariant[] = ["0.8b", "2b", "4b", "9b"];
export const QUANTIZATIONS: readonly Quantization[] = ["Q4_K_M", "Q8_0"];
export const DEFAULT_QUANT_PREFERENCE: readonly Quantization[] = ["Q4_K_M"];

/** Default file locations; `{size}` is "0.8B", "2B", "4B" or "9B", `{quant}` e.g. "Q4_K_M". */
export const DEFAULT_REPOSITORY_PATTERN = "unsloth/Qwen3.5-{size}-GGUF";
export const DEFAULT_FILE_PATTERN = "Qwen3.5-{size}-{quant}.gguf";

/** What llama.cpp's `qwen35` architecture needs to know about one variant (GGUF metadata names in comments). */
export interface Qwen35Architecture {
    /** block_count */
    layers: number;
    /** embedding_length (hidden_size) */
    embeddingLength: number;
    /** feed_forward_length (intermediate_size) */
    feedForwardLength: number;
    /** attention.head_count, for the full-attention layers */
    headCount: number;
    /** attention.head_count_kv */
    headCountKv: number;
    /** attention.key_length = value_length (head_dim) */
    headDim: number;
    /** rope.dimension_count: partial_rotary_factor 0.25 × head_dim */
    ropeDimensionCount: number;
    /** ssm.state_size (linear_key_head_dim = linear_value_head_dim) */
    ssmStateSize: number;
    /** ssm.group_count (linear_num_key_heads) */
    ssmGroupCount: number;
    /** ssm.time_step_rank (linear_num_value_heads) */
    ssmTimeStepRank: number;
    /** ssm.conv_kernel (linear_conv_kernel_dim) */
    ssmConvKernel: number;
    /** full_attention_interval: layer i keeps a KV cache when (i + 1) % interval === 0 */
    fullAttentionInterval: number;
    /** tokenizer size (vocab_size); also the logits row length */
    vocabSize: number;
    /** context_length the model was trained on */
    trainContextLength: number;
    /** tie_word_embeddings: no separate output.weight tensor */
    tiedEmbeddings: boolean;
}

export interface CatalogFile {
    /** Approximate size of the GGUF in bytes (decimal); files from other repositories differ by a few percent. */
    approxBytes: number;
}

export interface CatalogVariant {
    variant: ModelVariant;
    /** "0.8B": the size as Hugging Face repositories spell it */
    sizeLabel: string;
    /** Text-model parameter count computed from the architecture (embedding counted once when tied). */
    parameters: number;
    architecture: Qwen35Architecture;
    /** Model card default: 0.8B and 2B do not think unless asked, 4B and 9B do. */
    thinkingByDefault: boolean;
    files: Record<Quantization, CatalogFile>;
}

const SHARED = {
    headDim: 256,
    ropeDimensionCount: 64,
    ssmStateSize: 128,
    ssmGroupCount: 16,
    ssmConvKernel: 4,
    fullAttentionInterval: 4,
    vocabSize: 248_320,
    trainContextLength: 262_144
} as const;

function define(v: Omit<CatalogVariant, "parameters" | "architecture"> & {architecture: Omit<Qwen35Architecture, keyof typeof SHARED>}): CatalogVariant {
    const architecture = {...SHARED, ...v.architecture};
    return {...v, architecture, parameters: countParameters(architecture)};
}

/*
 * Sizes: Q4_K_M from the project's FACTS (0.53 / 1.3 / 2.7 / 5.6 GB; a 4B Q4_K_M seen at 2,606,333,024 bytes).
 * Q8_0: 0.8B 833,592,096 bytes (ggml-org), 4B 4,482,403,424 bytes (a public quantization); 2B and 9B are
 * parameters × 8.5 bits. All approximate: the GGUF header read at provisioning time is the real number.
 */
const VARIANTS: Record<ModelVariant, CatalogVariant> = {
    "0.8b": define({
        variant: "0.8b", sizeLabel: "0.8B", thinkingByDefault: false,
        architecture: {layers: 24, embeddingLength: 1024, feedForwardLength: 3584, headCount: 8, headCountKv: 2, ssmTimeStepRank: 16, tiedEmbeddings: true},
        files: {Q4_K_M: {approxBytes: 530e6}, Q8_0: {approxBytes: 834e6}}
    }),
    "2b": define({
        variant: "2b", sizeLabel: "2B", thinkingByDefault: false,
        architecture: {layers: 24, embeddingLength: 2048, feedForwardLength: 6144, headCount: 8, headCountKv: 2, ssmTimeStepRank: 16, tiedEmbeddings: true},
        files: {Q4_K_M: {approxBytes: 1.3e9}, Q8_0: {approxBytes: 2.02e9}}
    }),
    "4b": define({
        variant: "4b", sizeLabel: "4B", thinkingByDefault: true,
        architecture: {layers: 32, embeddingLength: 2560, feedForwardLength: 9216, headCount: 16, headCountKv: 4, ssmTimeStepRank: 32, tiedEmbeddings: true},
        files: {Q4_K_M: {approxBytes: 2.7e9}, Q8_0: {approxBytes: 4.48e9}}
    }),
    "9b": define({
        variant: "9b", sizeLabel: "9B", thinkingByDefault: true,
        architecture: {layers: 32, embeddingLength: 4096, feedForwardLength: 12288, headCount: 16, headCountKv: 4, ssmTimeStepRank: 32, tiedEmbeddings: false},
        files: {Q4_K_M: {approxBytes: 5.6e9}, Q8_0: {approxBytes: 9.53e9}}
    })
};

export function catalogVariant(variant: ModelVariant): CatalogVariant {
    return VARIANTS[variant];
}

export function isModelVariant(value: string): value is ModelVariant {
    return (MODEL_VARIANTS as readonly string[]).includes(value);
}

export function isQuantization(value: string): value is Quantization {
    return (QUANTIZATIONS as readonly string[]).includes(value);
}

/** "Qwen3.5-4B-Q4_K_M": the name replies and logs use for a model. */
export function modelName(variant: ModelVariant, quant: Quantization): string {
    return `Qwen3.5-${VARIANTS[variant].sizeLabel}-${quant}`;
}

export interface ModelLocation {
    /** Hugging Face repository, a pattern with `{size}` (default DEFAULT_REPOSITORY_PATTERN) */
    repository?: string;
    /** File name pattern with `{size}` and `{quant}` (default DEFAULT_FILE_PATTERN) */
    file?: string;
}

export function modelFileName(variant: ModelVariant, quant: Quantization, location: ModelLocation = {}): string {
    return fillPattern(location.file ?? DEFAULT_FILE_PATTERN, variant, quant);
}

/** `hf:owner/repo/file.gguf`: an explicit file, so node-llama-cpp makes no manifest call and the name is predictable. */
export function modelUri(variant: ModelVariant, quant: Quantization, location: ModelLocation = {}): string {
    const repository = fillPattern(location.repository ?? DEFAULT_REPOSITORY_PATTERN, variant, quant);
    return `hf:${repository}/${modelFileName(variant, quant, location)}`;
}

function fillPattern(pattern: string, variant: ModelVariant, quant: Quantization): string {
    return pattern.replaceAll("{size}", VARIANTS[variant].sizeLabel).replaceAll("{quant}", quant);
}

/** Card sampling defaults; presence penalty 1.5 keeps small models from looping. */
export interface SamplingDefaults {
    temperature: number;
    topP: number;
    topK: number;
    minP: number;
    presencePenalty: number;
}

export const SAMPLING_THINKING: Readonly<SamplingDefaults> = {temperature: 1.0, topP: 0.95, topK: 20, minP: 0, presencePenalty: 1.5};
export const SAMPLING_NON_THINKING: Readonly<SamplingDefaults> = {temperature: 0.7, topP: 0.8, topK: 20, minP: 0, presencePenalty: 1.5};

export function samplingDefaults(thinking: boolean): SamplingDefaults {
    return {...(thinking ? SAMPLING_THINKING : SAMPLING_NON_THINKING)};
}

/** Layers with a KV cache (full attention) and recurrent (Gated DeltaNet) layers. */
export function layerCounts(a: Qwen35Architecture): {attention: number; recurrent: number} {
    const attention = Math.floor(a.layers / a.fullAttentionInterval);
    return {attention, recurrent: a.layers - attention};
}

/** Text-model parameters from the tensor shapes llama.cpp's qwen35 loader expects. */
export function countParameters(a: Qwen35Architecture): number {
    const h = a.embeddingLength;
    const keyDim = a.ssmStateSize * a.ssmGroupCount;
    const valueDim = a.ssmStateSize * a.ssmTimeStepRank;
    const convChannels = 2 * keyDim + valueDim;
    const ffn = 3 * h * a.feedForwardLength + 2 * h;
    const recurrent = h * convChannels + h * valueDim + a.ssmConvKernel * convChannels + 2 * a.ssmTimeStepRank
        + 2 * h * a.ssmTimeStepRank + a.ssmStateSize + valueDim * h;
    const attention = h * a.headCount * a.headDim * 2 + 2 * h * a.headCountKv * a.headDim
        + a.headCount * a.headDim * h + 2 * a.headDim;
    const {attention: nAttn, recurrent: nRec} = layerCounts(a);
    const embeddings = a.vocabSize * h * (a.tiedEmbeddings ? 1 : 2) + h;
    return embeddings + a.layers * ffn + nRec * recurrent + nAttn * attention;
}

export interface ContextShape {
    /** Tokens per sequence (node-llama-cpp's `contextSize`). */
    contextSize: number;
    batchSize: number;
    /** Parallel sequences in the one context. */
    sequences: number;
    /** prompt-reuse checkpoints kept per sequence (inference.promptCheckpoints); default 0 */
    checkpoints?: number;
}

/**
 * Offline estimate of a context's resident CPU memory, mirroring llama.cpp's allocations: F16 KV cache for
 * the full-attention layers, F32 recurrent state (conv + delta-rule matrix) per sequence for the others, and
 * the compute buffer (logits + activations for a batch) minus its logits rows that no generation fills
 * (see unusedLogitsBytes). Checked against node-llama-cpp's V2 simulation on header-only GGUFs of the four
 * variants (within a few percent) and against measured RSS (docs/MEMORY.md).
 */
export function estimateContextBytes(a: Qwen35Architecture, shape: ContextShape): number {
    const {attention} = layerCounts(a);
    const paddedContext = Math.ceil(shape.contextSize / 256) * 256;
    const kvPerToken = attention * 2 * a.headCountKv * a.headDim * 2;
    const kv = kvPerToken * paddedContext * shape.sequences;
    const statePerSequence = recurrentStateBytes(a);
    const computeRows = Math.max(shape.batchSize, shape.sequences);
    const compute = a.vocabSize * computeRows * 4 + computeRows * a.embeddingLength * 12;
    const outputs = a.vocabSize * 4 * shape.sequences;
    return kv + statePerSequence * shape.sequences + compute + outputs - unusedLogitsBytes(a.vocabSize, shape) + activationBytes(shape)
        + checkpointBytes(a, shape);
}

/** What the recurrent state depends on (GGUF `qwen35.*` keys). */
export type RecurrentShape = Pick<Qwen35Architecture, "layers" | "fullAttentionInterval" | "ssmConvKernel" | "ssmStateSize" | "ssmGroupCount" | "ssmTimeStepRank">;

/**
 * One sequence's recurrent state, F32: per Gated DeltaNet layer the convolution window and the delta-rule
 * matrix (19.3 MiB for 0.8B and 2B, as llama.cpp's "RS buffer" reports). A prompt checkpoint is one of these.
 */
export function recurrentStateBytes(a: RecurrentShape): number {
    const recurrent = a.layers - Math.floor(a.layers / a.fullAttentionInterval);
    const convChannels = 2 * a.ssmStateSize * a.ssmGroupCount + a.ssmStateSize * a.ssmTimeStepRank;
    return recurrent * 4 * ((a.ssmConvKernel - 1) * convChannels + a.ssmTimeStepRank * a.ssmStateSize * a.ssmStateSize);
}

/** The recurrent layers' dimensions from a qwen35 header (zero-sized for any other architecture). */
export function recurrentShapeOf(info: {metadata: unknown}): RecurrentShape {
    const q = (info.metadata as {qwen35?: {block_count?: number; full_attention_interval?: number;
        ssm?: {conv_kernel?: number; state_size?: number; group_count?: number; time_step_rank?: number}}}).qwen35;
    return {layers: q?.block_count ?? 0, fullAttentionInterval: q?.full_attention_interval ?? 1, ssmConvKernel: q?.ssm?.conv_kernel ?? 1,
        ssmStateSize: q?.ssm?.state_size ?? 0, ssmGroupCount: q?.ssm?.group_count ?? 0, ssmTimeStepRank: q?.ssm?.time_step_rank ?? 0};
}

/**
 * Prompt-reuse checkpoints, each one recurrent state: per sequence at most inference.promptCheckpoints
 * unnamed ones plus node-llama-cpp's two named ones (chat start, grammar end) (src/inference/sequence-pool.ts).
 */
export function checkpointBytes(a: RecurrentShape, shape: Pick<ContextShape, "sequences" | "checkpoints">): number {
    const perSequence = (shape.checkpoints ?? 0) > 0 ? (shape.checkpoints ?? 0) + 2 : 0;
    return shape.sequences * perSequence * recurrentStateBytes(a);
}

/**
 * The compute buffer is reserved for logits of every token of a batch (n_vocab × batch × 4 bytes: 121 MiB
 * at batch 128 with Qwen3.5's vocabulary), but the daemon asks for the logits of each sequence's last token
 * only, so all but `sequences` rows are never written and never become resident (measured: docs/MEMORY.md).
 */
export function unusedLogitsBytes(vocabularySize: number, shape: Pick<ContextShape, "batchSize" | "sequences">): number {
    return vocabularySize * 4 * Math.max(0, Math.max(shape.batchSize, shape.sequences) - shape.sequences);
}

/**
 * llama.cpp's vocabulary tables per token (token texts, the token and merge maps, the piece cache; with
 * node-llama-cpp's JS view of them), measured with vocabulary-only loads: 44, 58, 122 and 231 MiB for 31k,
 * 62k, 124k and 248k tokens, ~975 bytes a token. Every Qwen3.5 variant has the same 248,320 tokens.
 */
export const TOKENIZER_BYTES_PER_TOKEN = 1000;

export type RequirementSource = "gguf-header" | "catalog";

/** What one candidate model needs in memory, and where the numbers came from. */
export interface CandidateRequirement {
    variant: ModelVariant;
    quant: Quantization;
    uri: string;
    /** weightsBytes + tokenizerBytes + contextBytes + overheadBytes */
    requiredBytes: number;
    /** resident weights: the tensor data, plus repacked copies that stay beside it (src/models/repack.ts) */
    weightsBytes: number;
    /** the vocabulary tables (~1 KB a token) */
    tokenizerBytes: number;
    /** KV cache, recurrent state, the part of the compute buffer a generation touches, and prompt checkpoints */
    contextBytes: number;
    /** of contextBytes: the most that prompt-reuse checkpoints can hold (inference.promptCheckpoints) */
    checkpointBytes: number;
    overheadBytes: number;
    source: RequirementSource;
    /** Why the numbers came from where they did (e.g. the header read error), for the plan's reasons. */
    note?: string;
}

/**
 * The offline fallback: the approximate file size as weights (plus repacked copies, from the tensor types
 * llama.cpp's quantizer writes), the context and the vocabulary computed from the architecture.
 */
export function catalogRequirement(variant: ModelVariant, quant: Quantization, uri: string, shape: ContextShape & {mmap?: boolean; cpu?: CpuSimd},
    overheadBytes = runtimeOverheadBytes(shape), note?: string): CandidateRequirement {
    const entry = VARIANTS[variant];
    const tensors = qwen35Tensors(entry.architecture, quant).map((t) => ({name: t.name, ggmlType: GGML_TYPES[t.type].id, dims: t.dims,
        bytes: tensorTypeBytes(t.type, t.dims)}));
    const repack = shape.cpu ? repackCost(tensors, shape.cpu, shape.mmap === true).extraBytes : 0;
    const weightsBytes = entry.files[quant].approxBytes + repack;
    const tokenizerBytes = entry.architecture.vocabSize * TOKENIZER_BYTES_PER_TOKEN;
    const contextBytes = estimateContextBytes(entry.architecture, shape);
    return {
        variant, quant, uri, source: "catalog", weightsBytes, tokenizerBytes, contextBytes, overheadBytes,
        checkpointBytes: checkpointBytes(entry.architecture, shape),
        requiredBytes: weightsBytes + tokenizerBytes + contextBytes + overheadBytes,
        ...(note ? {note} : {})
    };
}

/**
 * Memory the runtime needs besides weights, vocabulary and context. Measured on linux-x64, Node 20,
 * node-llama-cpp 3.21.1: a bare Node process has an RSS of 41 MiB; importing node-llama-cpp and getLlama()
 * brings it to 85-86 MiB; the daemon before its model ~110 MiB; with a real-size model loaded and serving, the
 * peak RSS of the whole process minus the tensor data, vocabulary tables and context came out at 80-110 MiB
 * (docs/MEMORY.md). 128 MiB covers it with room for the MQTT client, logger and job store.
 */
export const RUNTIME_OVERHEAD_BYTES = 128 * 1024 * 1024;

/**
 * Each parallel sequence beyond the first: measured 25-40 MiB above its KV cache and recurrent state while
 * both generate (generation buffers of node-llama-cpp and llama.cpp, a second chat session).
 */
export const RUNTIME_PER_SEQUENCE_BYTES = 40 * 1024 * 1024;

/** The runtime overhead for a context shape. */
export function runtimeOverheadBytes(shape: Pick<ContextShape, "sequences">): number {
    return RUNTIME_OVERHEAD_BYTES + RUNTIME_PER_SEQUENCE_BYTES * Math.max(0, shape.sequences - 1);
}

/**
 * The activations of one batch in the compute buffer: measured 12-18 MiB at batch 128 for 0.8B and 2B
 * (the Gated DeltaNet chunks dominate, so it hardly depends on the model's width); 160 KiB a batch row.
 */
export function activationBytes(shape: Pick<ContextShape, "batchSize" | "sequences">): number {
    return Math.max(shape.batchSize, shape.sequences) * 160 * 1024;
}
