/** The `qwen35.*` architecture keys of a GGUF with the published dimensions of a Qwen3.5 variant. */
import type {Qwen35Architecture} from "../models/catalog.js";
import type {RecipeQuant} from "../models/qwen35-tensors.js";
import {FILE_TYPE} from "../models/qwen35-tensors.js";
import {arr, f32, str, u32, type GgufMetaValue} from "./gguf-writer.js";

/** The `qwen35.*` keys llama.cpp needs to build the graph, with the published values. */
export function qwen35ArchitectureMetadata(a: Qwen35Architecture, name: string, quant: RecipeQuant): Record<string, GgufMetaValue> {
    const A = "qwen35";
    const ropeHalf = a.ropeDimensionCount / 2;
    const third = Math.ceil(ropeHalf / 3);
    return {
        "general.architecture": str(A),
        "general.type": str("model"),
        "general.name": str(name),
        "general.file_type": u32(FILE_TYPE[quant]),
        "general.quantization_version": u32(2),
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
        // the config's mrope_section ([11, 11, 10] for 64 rotary dims), padded to four
        [`${A}.rope.dimension_sections`]: arr("i32", [third, third, ropeHalf - 2 * third, 0]),
        [`${A}.rope.freq_base`]: f32(1e7),
        [`${A}.ssm.conv_kernel`]: u32(a.ssmConvKernel),
        [`${A}.ssm.state_size`]: u32(a.ssmStateSize),
        [`${A}.ssm.group_count`]: u32(a.ssmGroupCount),
        [`${A}.ssm.time_step_rank`]: u32(a.ssmTimeStepRank),
        [`${A}.ssm.inner_size`]: u32(a.ssmStateSize * a.ssmTimeStepRank),
        [`${A}.full_attention_interval`]: u32(a.fullAttentionInterval)
    };
}
