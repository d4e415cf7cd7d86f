/**
 * The tensors of a published Qwen3.5 GGUF, from the catalog's dimensions, typed the way llama.cpp's quantizer
 * types them (src/llama-quant.cpp of the llama.cpp node-llama-cpp bundles): Q4_K_M keeps the output matrix (the
 * token embedding, when tied) at Q6_K, attn_qkv at Q5_K, and every third ffn_down / attn_v (plus the first and
 * last eighth) at Q6_K; Q8_0 is Q8_0 throughout. Norms, biases and ssm_conv1d stay F32. The offline memory
 * estimate, the header-only fixtures and the real-scale test models use it. Pure.
 */
import type {Qwen35Architecture} from "./catalog.js";

/** ggml tensor types of Qwen3.5 files, with their ids (ggml.h) and block geometry (ggml-common.h). */
export type GgmlTensorType = "f32" | "f16" | "q8_0" | "q4_K" | "q5_K" | "q6_K";
export const GGML_TYPES: Readonly<Record<GgmlTensorType, {id: number; blockElements: number; blockBytes: number}>> = {
    f32: {id: 0, blockElements: 1, blockBytes: 4},
    f16: {id: 1, blockElements: 1, blockBytes: 2},
    q8_0: {id: 8, blockElements: 32, blockBytes: 34},
    q4_K: {id: 12, blockElements: 256, blockBytes: 144},
    q5_K: {id: 13, blockElements: 256, blockBytes: 176},
    q6_K: {id: 14, blockElements: 256, blockBytes: 210}
};

/** Bytes of one tensor of this type and shape. */
export function tensorTypeBytes(type: GgmlTensorType, dims: readonly number[]): number {
    const g = GGML_TYPES[type];
    return (dims.reduce((a, b) => a * b, 1) / g.blockElements) * g.blockBytes;
}

export type RecipeQuant = "F16" | "Q4_K_M" | "Q8_0";

export interface RecipeTensor {
    name: string;
    /** innermost first */
    dims: number[];
    type: GgmlTensorType;
    /** what the tensor is, for choosing its values: a matrix's fan-in is dims[0] */
    role: "embedding" | "output" | "matrix" | "norm" | "conv" | "dt_bias" | "ssm_a";
}

/** general.file_type values (llama_ftype). */
export const FILE_TYPE: Record<RecipeQuant, number> = {F16: 1, Q8_0: 7, Q4_K_M: 15};

/** llama.cpp's use_more_bits(): Q4_K_M keeps these layers' ffn_down / attn_v at Q6_K. */
function moreBits(i: number, n: number): boolean {
    return i < n / 8 || i >= (7 * n) / 8 || (i - Math.floor(n / 8)) % 3 === 2;
}

/** The tensor list llama.cpp's qwen35 loader expects, in the order converters write it. */
export function qwen35Tensors(a: Qwen35Architecture, quant: RecipeQuant): RecipeTensor[] {
    const h = a.embeddingLength;
    const keyDim = a.ssmStateSize * a.ssmGroupCount;
    const valueDim = a.ssmStateSize * a.ssmTimeStepRank;
    const conv = 2 * keyDim + valueDim;
    const W: GgmlTensorType = quant === "Q4_K_M" ? "q4_K" : quant === "Q8_0" ? "q8_0" : "f16";
    const high: GgmlTensorType = quant === "Q4_K_M" ? "q6_K" : W;
    const out: RecipeTensor[] = [];
    const t = (name: string, dims: number[], type: GgmlTensorType, role: RecipeTensor["role"] = "matrix"): void =>
        void out.push({name, dims, type, role});

    t("token_embd.weight", [h, a.vocabSize], a.tiedEmbeddings ? high : W, "embedding");
    t("output_norm.weight", [h], "f32", "norm");
    if (!a.tiedEmbeddings) t("output.weight", [h, a.vocabSize], high, "output");
    const nAttn = Math.floor(a.layers / a.fullAttentionInterval);
    let attnIndex = 0;
    for (let i = 0; i < a.layers; i++) {
        const p = `blk.${i}.`;
        t(`${p}attn_norm.weight`, [h], "f32", "norm");
        t(`${p}post_attention_norm.weight`, [h], "f32", "norm");
        t(`${p}ffn_gate.weight`, [h, a.feedForwardLength], W);
        t(`${p}ffn_up.weight`, [h, a.feedForwardLength], W);
        t(`${p}ffn_down.weight`, [a.feedForwardLength, h], moreBits(i, a.layers) ? high : W);
        if ((i + 1) % a.fullAttentionInterval !== 0) {
            t(`${p}attn_qkv.weight`, [h, conv], quant === "Q4_K_M" ? "q5_K" : W);
            t(`${p}attn_gate.weight`, [h, valueDim], W);
            t(`${p}ssm_conv1d.weight`, [a.ssmConvKernel, conv], "f32", "conv");
            t(`${p}ssm_dt.bias`, [a.ssmTimeStepRank], "f32", "dt_bias");
            t(`${p}ssm_a`, [a.ssmTimeStepRank], "f32", "ssm_a");
            t(`${p}ssm_beta.weight`, [h, a.ssmTimeStepRank], W);
            t(`${p}ssm_alpha.weight`, [h, a.ssmTimeStepRank], W);
            t(`${p}ssm_norm.weight`, [a.ssmStateSize], "f32", "norm");
            t(`${p}ssm_out.weight`, [valueDim, h], W);
        } else {
            t(`${p}attn_q.weight`, [h, a.headCount * a.headDim * 2], W);
            t(`${p}attn_k.weight`, [h, a.headCountKv * a.headDim], W);
            t(`${p}attn_v.weight`, [h, a.headCountKv * a.headDim], moreBits(attnIndex++, nAttn) ? high : W);
            t(`${p}attn_output.weight`, [a.headCount * a.headDim, h], W);
            t(`${p}attn_q_norm.weight`, [a.headDim], "f32", "norm");
            t(`${p}attn_k_norm.weight`, [a.headDim], "f32", "norm");
        }
    }
    return out;
}
