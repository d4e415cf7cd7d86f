/**
 * Header-only GGUFs with the real dimensions of the four Qwen3.5 variants (from the catalog), so the memory
 * estimates run over the real numbers without gigabytes of weights. Tensor types follow llama.cpp's
 * Q4_K_M / Q8_0 recipes, because the weights' size is what the planner compares.
 *
 * The shared writer only knows f32/f16 tensors; quantized types are patched into its header afterwards
 * (`retypeTensors`). Drop that step if the writer gains a raw ggml type.
 */
import {mkdir, writeFile} from "node:fs/promises";
import {join} from "node:path";
import {arr, encodeGguf, f32, str, u32, type GgufMetaValue, type GgufTensorSpec} from "../../src/testing/gguf-writer.js";
import {MODEL_VARIANTS, catalogVariant, layerCounts, type ModelVariant} from "../../src/models/catalog.js";

export type HeaderQuant = "F16" | "Q4_K_M" | "Q8_0";

/** ggml type ids and their block geometry: [elements per block, bytes per block]. */
export const GGML = {F32: 0, F16: 1, Q8_0: 8, Q4_K: 12, Q5_K: 13, Q6_K: 14} as const;
const BLOCK: Record<number, [number, number]> = {0: [1, 4], 1: [1, 2], 8: [32, 34], 12: [256, 144], 13: [256, 176], 14: [256, 210]};
/** general.file_type values (llama_ftype). */
const FILE_TYPE: Record<HeaderQuant, number> = {F16: 1, Q8_0: 7, Q4_K_M: 15};
const ALIGNMENT = 32;

export interface HeaderTensor {
    name: string;
    dims: number[];
    ggmlType: number;
}

export function tensorBytes(ggmlType: number, dims: readonly number[]): number {
    const [perBlock, blockBytes] = BLOCK[ggmlType] ?? [1, 4];
    return (dims.reduce((a, b) => a * b, 1) / perBlock) * blockBytes;
}

/** llama.cpp's use_more_bits(): Q4_K_M keeps a few attn_v / ffn_down tensors at Q6_K. */
function moreBits(i: number, n: number): boolean {
    return i < n / 8 || i >= (7 * n) / 8 || (i - Math.floor(n / 8)) % 3 === 2;
}

/** The tensor list llama.cpp's qwen35 loader expects (see docs TINY-QWEN35-GGUF.md), typed per `quant`. */
export function qwen35HeaderTensors(variant: ModelVariant, quant: HeaderQuant): HeaderTensor[] {
    const a = catalogVariant(variant).architecture;
    const h = a.embeddingLength;
    const keyDim = a.ssmStateSize * a.ssmGroupCount;
    const valueDim = a.ssmStateSize * a.ssmTimeStepRank;
    const conv = 2 * keyDim + valueDim;
    const W = quant === "Q4_K_M" ? GGML.Q4_K : quant === "Q8_0" ? GGML.Q8_0 : GGML.F16;
    const high = quant === "Q4_K_M" ? GGML.Q6_K : W;
    const out: HeaderTensor[] = [];
    const t = (name: string, dims: number[], ggmlType: number): void => void out.push({name, dims, ggmlType});

    // The output matrix (or the embedding standing in for it when tied) is kept at Q6_K by Q4_K_M.
    t("token_embd.weight", [h, a.vocabSize], a.tiedEmbeddings ? high : W);
    t("output_norm.weight", [h], GGML.F32);
    if (!a.tiedEmbeddings) t("output.weight", [h, a.vocabSize], high);
    const nAttn = layerCounts(a).attention;
    let attnIndex = 0;
    for (let i = 0; i < a.layers; i++) {
        const p = `blk.${i}.`;
        t(`${p}attn_norm.weight`, [h], GGML.F32);
        t(`${p}post_attention_norm.weight`, [h], GGML.F32);
        t(`${p}ffn_gate.weight`, [h, a.feedForwardLength], W);
        t(`${p}ffn_up.weight`, [h, a.feedForwardLength], W);
        t(`${p}ffn_down.weight`, [a.feedForwardLength, h], moreBits(i, a.layers) ? high : W);
        if ((i + 1) % a.fullAttentionInterval !== 0) {
            t(`${p}attn_qkv.weight`, [h, conv], quant === "Q4_K_M" ? GGML.Q5_K : W);
            t(`${p}attn_gate.weight`, [h, valueDim], W);
            t(`${p}ssm_conv1d.weight`, [a.ssmConvKernel, conv], GGML.F32);
            t(`${p}ssm_dt.bias`, [a.ssmTimeStepRank], GGML.F32);
            t(`${p}ssm_a`, [a.ssmTimeStepRank], GGML.F32);
            // Rows of 16-32 outputs: tiny, left unquantized.
            t(`${p}ssm_beta.weight`, [h, a.ssmTimeStepRank], GGML.F32);
            t(`${p}ssm_alpha.weight`, [h, a.ssmTimeStepRank], GGML.F32);
            t(`${p}ssm_norm.weight`, [a.ssmStateSize], GGML.F32);
            t(`${p}ssm_out.weight`, [valueDim, h], W);
        } else {
            t(`${p}attn_q.weight`, [h, a.headCount * a.headDim * 2], W);
            t(`${p}attn_k.weight`, [h, a.headCountKv * a.headDim], W);
            t(`${p}attn_v.weight`, [h, a.headCountKv * a.headDim], moreBits(attnIndex++, nAttn) ? high : W);
            t(`${p}attn_output.weight`, [a.headCount * a.headDim, h], W);
            t(`${p}attn_q_norm.weight`, [a.headDim], GGML.F32);
            t(`${p}attn_k_norm.weight`, [a.headDim], GGML.F32);
        }
    }
    return out;
}

/** The metadata llama.cpp needs to build the graph; the vocabulary is given by size only ("none" tokenizer). */
export function qwen35HeaderMetadata(variant: ModelVariant, quant: HeaderQuant): Record<string, GgufMetaValue> {
    const c = catalogVariant(variant);
    const a = c.architecture;
    const A = "qwen35";
    return {
        "general.architecture": str(A),
        "general.name": str(`Qwen3.5-${c.sizeLabel} (header-only fixture)`),
        "general.file_type": u32(FILE_TYPE[quant]),
        [`${A}.context_length`]: u32(a.trainContextLength),
        [`${A}.embedding_length`]: u32(a.embeddingLength),
        [`${A}.block_count`]: u32(a.layers),
        [`${A}.feed_forward_length`]: u32(a.feedForwardLength),
        [`${A}.attention.head_count`]: u32(a.headCount),
        [`${A}.attention.head_count_kv`]: u32(a.headCountKv),
        [`${A}.attention.key_length`]: u32(a.headDim),
        [`${A}.attention.value_length`]: u32(a.headDim),
        [`${A}.attention.layer_norm_rms_epsilon`]: f32(1e-6),
        [`${A}.rope.dimension_count`]: u32(a.ropeDimensionCount),
        // mrope_section [11, 11, 10] of the config, padded to four.
        [`${A}.rope.dimension_sections`]: arr("i32", [11, 11, 10, 0]),
        [`${A}.rope.freq_base`]: f32(1e7),
        [`${A}.ssm.conv_kernel`]: u32(a.ssmConvKernel),
        [`${A}.ssm.state_size`]: u32(a.ssmStateSize),
        [`${A}.ssm.group_count`]: u32(a.ssmGroupCount),
        [`${A}.ssm.time_step_rank`]: u32(a.ssmTimeStepRank),
        [`${A}.ssm.inner_size`]: u32(a.ssmStateSize * a.ssmTimeStepRank),
        [`${A}.full_attention_interval`]: u32(a.fullAttentionInterval),
        [`${A}.vocab_size`]: u32(a.vocabSize),
        // 248,320 token strings would add ~4 MB per file and change no estimate.
        "tokenizer.ggml.model": str("none")
    };
}

export function encodeQwen35Header(variant: ModelVariant, quant: HeaderQuant): Buffer {
    const tensors = qwen35HeaderTensors(variant, quant);
    const specs: GgufTensorSpec[] = tensors.map((t) => ({name: t.name, dims: t.dims, type: t.ggmlType === GGML.F32 ? "f32" : "f16"}));
    const header = encodeGguf(qwen35HeaderMetadata(variant, quant), specs, {headerOnly: true, alignment: ALIGNMENT});
    return retypeTensors(header, tensors);
}

/**
 * Rewrites each tensor info's ggml type and data offset in a header the writer produced with f32/f16
 * placeholders. Fields keep their width, so nothing else moves. Finds each info by its length-prefixed name.
 */
export function retypeTensors(header: Buffer, tensors: readonly HeaderTensor[]): Buffer {
    const out = Buffer.from(header);
    let offset = 0;
    for (const t of tensors) {
        const name = Buffer.from(t.name, "utf8");
        const prefix = Buffer.alloc(8);
        prefix.writeBigUInt64LE(BigInt(name.length));
        // The length prefix keeps "blk.1.x" from matching inside "blk.11.x"; tensor names are unique.
        const at = out.indexOf(Buffer.concat([prefix, name]));
        if (at < 0) throw new Error(`tensor info ${t.name} not found in the header`);
        const typeAt = at + 8 + name.length + 4 + 8 * t.dims.length;
        out.writeUInt32LE(t.ggmlType, typeAt);
        out.writeBigUInt64LE(BigInt(offset), typeAt + 4);
        offset = Math.ceil((offset + tensorBytes(t.ggmlType, t.dims)) / ALIGNMENT) * ALIGNMENT;
    }
    return out;
}

/** Tensor data bytes the header describes (what the real file would hold after its header). */
export function headerDataBytes(variant: ModelVariant, quant: HeaderQuant): number {
    return qwen35HeaderTensors(variant, quant).reduce((sum, t) => sum + tensorBytes(t.ggmlType, t.dims), 0);
}

/** Writes `Qwen3.5-{size}-{quant}.gguf` header fixtures into `dir`; returns variant -> path. */
export async function writeQwen35Headers(dir: string, quant: HeaderQuant = "Q4_K_M",
    variants: readonly ModelVariant[] = MODEL_VARIANTS): Promise<Record<ModelVariant, string>> {
    await mkdir(dir, {recursive: true});
    const paths = {} as Record<ModelVariant, string>;
    for (const variant of variants) {
        const path = join(dir, `Qwen3.5-${catalogVariant(variant).sizeLabel}-${quant}.gguf`);
        await writeFile(path, encodeQwen35Header(variant, quant));
        paths[variant] = path;
    }
    return paths;
}
