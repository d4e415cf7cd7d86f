/**
 * Real-scale test models: a GGUF with the exact shape of a published Qwen3.5 file (the catalog's dimensions,
 * the full 248,320-token vocabulary and so a ~7 MB header, llama.cpp's Q4_K_M or Q8_0 tensor types) and random
 * weights. Loading, memory, tokenizer tables, prompt and generation speed behave as with the real file; the
 * text is noise. Written straight to disk in pieces: a 1.3 GB file needs a few MB of memory.
 *
 * "endless" (the default) zeroes the output rows of the control tokens, so greedy generation never emits an
 * end token and runs to maxTokens: exact usage counts and steady benchmarks. "random" leaves them.
 */
import {createHash} from "node:crypto";
import {catalogVariant, type ModelVariant} from "../models/catalog.js";
import {GGML_TYPES, writeGgufFile, type GgmlQuantType, type GgufTensorSpec} from "./gguf-writer.js";
import {randomBlocks} from "./quant-blocks.js";
import {qwen35Tensors, tensorTypeBytes, type RecipeQuant, type RecipeTensor} from "../models/qwen35-tensors.js";
import {qwen35ArchitectureMetadata} from "./qwen35-metadata.js";
import {buildVocab, mulberry32, SPECIAL_TOKENS, tokenizerMetadata} from "./tiny-qwen35.js";

export type ScaleQuant = Exclude<RecipeQuant, "F16">;
export const SCALE_QUANTS: readonly ScaleQuant[] = ["Q4_K_M", "Q8_0"];

export interface ScaleModelOptions {
    variant: ModelVariant;
    quant: ScaleQuant;
    /** default "endless" */
    kind?: "random" | "endless";
}

export interface ScaleModelFile {
    path: string;
    bytes: number;
    vocabSize: number;
    /** the tensor data the header describes (the file minus its header) */
    tensorBytes: number;
}

/** A seed from the tensor's name: each tensor starts somewhere else in the random pool. */
function nameSeed(name: string): number {
    return createHash("sha256").update(name).digest().readUInt32LE(0);
}

/** Values of the small F32 tensors, as in the tiny models: norms 1, ssm_a negative (it holds −exp(A_log)). */
function f32Fill(t: RecipeTensor): (chunk: Float32Array, start: number) => void {
    const [lo, hi] = t.role === "norm" ? [1, 1] : t.role === "ssm_a" ? [-2, -0.5] : t.role === "conv" ? [-0.5, 0.5] : [-1, 1];
    const rnd = mulberry32(nameSeed(t.name));
    return (chunk) => {
        for (let i = 0; i < chunk.length; i++) chunk[i] = lo === hi ? lo : lo + (hi - lo) * rnd();
    };
}

/** The writer's tensor specs for a recipe: quantized blocks scaled to variance 1/fan-in, embeddings ~0.5. */
export function scaleTensorSpecs(tensors: readonly RecipeTensor[], zeroRows: ReadonlySet<number>): GgufTensorSpec[] {
    return tensors.map((t): GgufTensorSpec => {
        if (t.type === "f32" || t.type === "f16") return {name: t.name, dims: t.dims, type: t.type, fill: f32Fill(t)};
        const type: GgmlQuantType = t.type;
        const rowBlocks = (t.dims[0] ?? 0) / GGML_TYPES[type].blockElements;
        // the output matrix decides the next token: rows of zeros give control tokens a logit of 0
        const output = t.role === "output" || (t.role === "embedding" && !tensors.some((o) => o.role === "output"));
        const sigma = t.role === "embedding" || t.role === "output" ? 0.5 : 1 / Math.sqrt(t.dims[0] ?? 1);
        return {name: t.name, dims: t.dims, type, fillBytes: randomBlocks(type, {
            sigma, seed: nameSeed(t.name),
            ...(output && zeroRows.size > 0 ? {zeroBlock: (block: number) => zeroRows.has(Math.floor(block / rowBlocks))} : {})
        })};
    });
}

/** Writes a real-scale qwen35 GGUF of `variant` × `quant` to `path`. */
export function writeScaleModel(path: string, options: ScaleModelOptions): ScaleModelFile {
    const entry = catalogVariant(options.variant);
    const a = entry.architecture;
    // the whole vocabulary: 256 byte tokens + merges + Qwen's control tokens = vocab_size rows of the output
    const vocab = buildVocab(a.vocabSize - 256 - SPECIAL_TOKENS.length);
    if (vocab.tokens.length !== a.vocabSize) throw new Error(`vocabulary of ${vocab.tokens.length} tokens, expected ${a.vocabSize}`);
    const zeroRows = new Set<number>();
    if ((options.kind ?? "endless") === "endless") vocab.types.forEach((type, id) => { if (type === 3) zeroRows.add(id); });
    const recipe = qwen35Tensors(a, options.quant);
    const meta = {
        ...qwen35ArchitectureMetadata(a, `Qwen3.5-${entry.sizeLabel} (qwen-edge real-scale test model, random weights)`, options.quant),
        ...tokenizerMetadata(vocab)
    };
    const bytes = writeGgufFile(path, meta, scaleTensorSpecs(recipe, zeroRows));
    const tensorBytes = recipe.reduce((sum, t) => sum + tensorTypeBytes(t.type, t.dims), 0);
    return {path, bytes, vocabSize: vocab.tokens.length, tensorBytes};
}
