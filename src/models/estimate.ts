/**
 * Memory requirement of a candidate model: node-llama-cpp's V2 estimates (a no-alloc simulation inside
 * llama.cpp) over the GGUF header, read from a local file or from the remote file by HTTP range. When no
 * header can be read (offline, not provisioned) the catalog's numbers stand in, marked `source: "catalog"`.
 */
import {readFileSync} from "node:fs";
import {stat} from "node:fs/promises";
import {GgufInsights, LlamaLogLevel, getLlama, readGgufFileInfo, type GgufFileInfo, type Llama} from "node-llama-cpp";
import {simdFromCpuinfo} from "../system/probe.js";
import {
    MODEL_VARIANTS, TOKENIZER_BYTES_PER_TOKEN, activationBytes, catalogRequirement, checkpointBytes, modelUri, runtimeOverheadBytes, unusedLogitsBytes,
    recurrentShapeOf,
    type CandidateRequirement, type ContextShape, type ModelLocation, type ModelVariant, type Quantization
} from "./catalog.js";
import {checkGgufHeader, ggmlTensorBytes} from "./gguf-check.js";
import {repackCost, type CpuSimd, type WeightTensor} from "./repack.js";

/** What decides resident memory besides the file and the context shape (docs/MEMORY.md). */
export interface LoadShape {
    /** model.mmap: the file mapped instead of read (repacked weights then stay resident twice) */
    mmap?: boolean;
    /** the CPU's SIMD features (which weights llama.cpp repacks); default this machine's */
    cpu?: CpuSimd;
}

export interface EstimateOptions extends ContextShape, LoadShape {
    /** Shared Llama instance (the engine's); default: one created here with gpu off and one thread. */
    llama?: Llama;
    /** Read remote headers (HTTP range); false skips straight to the catalog. Default true. */
    remote?: boolean;
    /** Runtime overhead added to every candidate; default runtimeOverheadBytes(shape). */
    overheadBytes?: number;
    /** Must match the engine's context option; default node-llama-cpp's "auto". */
    flashAttention?: boolean;
    signal?: AbortSignal;
}

export interface EstimateTarget {
    variant: ModelVariant;
    quant: Quantization;
    /** Hugging Face or https URI of the file; default the catalog's. */
    uri?: string;
    /** Local path of the provisioned file, when there is one: read before the network. */
    path?: string;
}

export interface HeaderEstimate {
    /** resident weights: the file's tensor data, plus repacked copies that stay beside it */
    weightsBytes: number;
    /** llama.cpp's vocabulary tables (and node-llama-cpp's view of them) */
    tokenizerBytes: number;
    /** KV cache, recurrent state, and the part of the compute buffer a generation touches */
    contextBytes: number;
    /** of contextBytes: prompt-reuse checkpoints at most */
    checkpointBytes: number;
    vocabularySize: number;
    /** Tensor data size stated by the header (the file minus its metadata). */
    modelSizeBytes: number;
    architecture: string | undefined;
}

/** Requirement of every variant × quantization, in catalog order. */
export async function estimateCandidates(targets: readonly EstimateTarget[], options: EstimateOptions): Promise<CandidateRequirement[]> {
    const results: CandidateRequirement[] = [];
    // One at a time: each simulation loads a no-alloc model in llama.cpp, and the devices are small.
    for (const target of targets) results.push(await estimateRequirement(target, options));
    return results;
}

/** Every variant × quantization in `quants`, with URIs from `location` (config's repository override). */
export function catalogTargets(quants: readonly Quantization[], location: ModelLocation = {}, variants?: readonly ModelVariant[]): EstimateTarget[] {
    return (variants ?? MODEL_VARIANTS).flatMap((variant) => quants.map((quant) => ({variant, quant, uri: modelUri(variant, quant, location)})));
}

export async function estimateRequirement(target: EstimateTarget, options: EstimateOptions): Promise<CandidateRequirement> {
    const uri = target.uri ?? modelUri(target.variant, target.quant);
    const overheadBytes = options.overheadBytes ?? runtimeOverheadBytes(options);
    const sources: string[] = [];
    if (target.path !== undefined && await isFile(target.path)) sources.push(target.path);
    if (options.remote !== false) sources.push(uri);
    let failure = sources.length === 0 ? "remote header reads are off" : "";
    for (const source of sources) {
        try {
            // A damaged local header can make node-llama-cpp's reader spin and grow without bound (measured:
            // flipped tensor dims); the structural check fails fast, and provisioning then sets the file aside.
            if (source !== uri) await checkGgufHeader(source);
            const header = await estimateGgufRequirement(source, options);
            if (header.architecture !== "qwen35") throw new Error(`architecture is ${header.architecture ?? "missing"}, not qwen35`);
            return {
                variant: target.variant, quant: target.quant, uri, source: "gguf-header",
                weightsBytes: header.weightsBytes, tokenizerBytes: header.tokenizerBytes, contextBytes: header.contextBytes, overheadBytes,
                checkpointBytes: header.checkpointBytes, requiredBytes: header.weightsBytes + header.tokenizerBytes + header.contextBytes + overheadBytes
            };
        } catch (err) {
            if (options.signal?.aborted) throw err;
            failure = `${source === uri ? "remote" : "local"} header unreadable: ${shortMessage(err)}`;
        }
    }
    return catalogRequirement(target.variant, target.quant, uri, {...options, cpu: options.cpu ?? thisCpu()}, overheadBytes, failure);
}

/**
 * Resident memory of one GGUF (a path or a URI) loaded the daemon's way; throws when the header cannot be
 * read. node-llama-cpp's V2 estimates (a no-alloc simulation inside llama.cpp) give the tensor data and the
 * context's buffers; to those, what they leave out and what they count but no generation touches
 * (measured on real-size files, docs/MEMORY.md):
 * - the vocabulary tables, ~1 KB per token (248,320 tokens: ~237 MiB, whatever the model's size);
 * - repacked weights held twice (mapped file) or the tied output repacked beside the embedding (some ARM CPUs);
 * - of the compute buffer, only what a batch touches: the logits of each sequence's last token and the
 *   activations (the buffer is reserved for a whole batch of logits, which the daemon never asks for).
 */
export async function estimateGgufRequirement(pathOrUri: string, options: ContextShape & LoadShape & {llama?: Llama; flashAttention?: boolean; signal?: AbortSignal}): Promise<HeaderEstimate> {
    const info = await readGgufFileInfo(pathOrUri, {
        logWarnings: false,
        // The default is 10 retries with backoff (~110 s); a planner offline should fall back at once.
        fetchRetryOptions: {retries: 1, minTimeout: 500, maxTimeout: 2000},
        ...(options.signal ? {signal: options.signal} : {})
    });
    const insights = await GgufInsights.from(info, options.llama ?? await sharedLlama());
    // No mmap in the estimate: mmap'ed weights still have to stay resident to be served at speed.
    const model = await insights.estimateModelResourceRequirementsV2({gpuLayers: 0, useMmap: false});
    const context = await insights.estimateContextResourceRequirementsV2({
        contextSize: options.contextSize, modelGpuLayers: 0, batchSize: options.batchSize, sequences: options.sequences,
        ...(options.flashAttention !== undefined ? {flashAttention: options.flashAttention} : {})
    });
    const tensors = weightTensors(info);
    const vocabularySize = vocabularySizeOf(info, tensors);
    const repack = repackCost(tensors, options.cpu ?? thisCpu(), options.mmap === true);
    const checkpoints = options.checkpoints ? checkpointBytes(recurrentShapeOf(info), options) : 0;
    return {
        weightsBytes: Math.max(model.cpuRam, insights.modelSize) + repack.extraBytes,
        tokenizerBytes: vocabularySize * TOKENIZER_BYTES_PER_TOKEN,
        contextBytes: Math.max(0, context.cpuRam - unusedLogitsBytes(vocabularySize, options)) + activationBytes(options) + checkpoints,
        checkpointBytes: checkpoints,
        vocabularySize,
        modelSizeBytes: insights.modelSize,
        architecture: info.metadata.general?.architecture
    };
}

function weightTensors(info: GgufFileInfo): WeightTensor[] {
    return (info.fullTensorInfo ?? []).map((t) => {
        const dims = t.dimensions.map(Number);
        return {name: t.name, ggmlType: t.ggmlType, dims, bytes: ggmlTensorBytes(t.ggmlType, dims) ?? 0};
    });
}

/** Rows of the token embedding: the vocabulary llama.cpp builds tables for (also in header-only fixtures). */
function vocabularySizeOf(info: GgufFileInfo, tensors: readonly WeightTensor[]): number {
    const embedding = tensors.find((t) => t.name === "token_embd.weight");
    return embedding?.dims[1] ?? info.metadata.tokenizer?.ggml?.tokens?.length ?? 0;
}

let cpuCache: CpuSimd | null = null;

/** This machine's SIMD features: the estimate is for the device it runs on. */
export function thisCpu(): CpuSimd {
    if (cpuCache) return cpuCache;
    let cpuinfo: string | null = null;
    try {
        cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
    } catch {
        cpuinfo = null;
    }
    cpuCache = {arch: process.arch, features: simdFromCpuinfo(cpuinfo)};
    return cpuCache;
}

let llamaPromise: Promise<Llama> | null = null;

/** A CPU-only Llama that never builds or downloads; one thread, for the estimates only. */
function sharedLlama(): Promise<Llama> {
    llamaPromise ??= getLlama({gpu: false, build: "never", maxThreads: 1, logLevel: LlamaLogLevel.error}).catch((err: unknown) => {
        llamaPromise = null;
        throw err;
    });
    return llamaPromise;
}

/** Frees the Llama created for estimates (none when callers always pass their own). */
export async function disposeEstimateLlama(): Promise<void> {
    const pending = llamaPromise;
    llamaPromise = null;
    const llama = await pending?.catch(() => null);
    await llama?.dispose();
}

async function isFile(path: string): Promise<boolean> {
    try {
        return (await stat(path)).isFile();
    } catch {
        return false;
    }
}

function shortMessage(err: unknown): string {
    const message = err instanceof Error ? err.message : String(err);
    const cause = err instanceof Error && err.cause instanceof Error ? ` (${err.cause.message})` : "";
    return (message.split("\n")[0] + cause).slice(0, 160);
}
