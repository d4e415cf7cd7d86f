/**
 * Weight repacking: at load, llama.cpp's CPU backend copies the matrices of some quantized types into an
 * interleaved layout for this CPU's SIMD ("CPU_REPACK" buffer). Which types depends on the CPU (from
 * ggml-cpu/repack.cpp, ggml_repack_get_optimal_repack_type, in the llama.cpp node-llama-cpp 3.21.1 bundles):
 *   x86 with AVX2:        Q4_0, Q4_K, IQ4_NL, MXFP4 (and Q2_K with AVX-512)
 *   ARM with dotprod/i8mm: Q4_0, Q4_K, Q5_K, Q6_K, IQ4_NL, MXFP4, Q8_0
 *   anything else (e.g. the Pi 4's Cortex-A72): nothing
 * On x86 with AMX (Intel Xeon since Sapphire Rapids; /proc/cpuinfo `amx_int8`) the "AMX" buffer comes first
 * (ggml-cpu/amx): Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K and IQ4_XS matrices move there, in a packed layout a
 * few bytes per block larger than the file's (get_row_size in ggml-cpu/amx/mmq.cpp: +4 bytes per Q4_K, Q5_K
 * and Q8_0 block, +2 per IQ4_XS block). Measured on such a Xeon with node-llama-cpp 3.21.1's prebuilt binary,
 * real-shape 0.8B Q4_K_M: AMX buffer 497.0 MiB + CPU buffer 200.8 MiB for 490 MiB of tensor data — the tied
 * output is the Q6_K embedding packed again (+198 MiB), the AMX packing the rest of the difference.
 * Only matrices multiplied by activations move; the token embedding is read row by row and stays. What it
 * costs in memory (docs/MEMORY.md):
 *   - the model file read into memory (model.mmap off): nothing extra, the repacked copy replaces the original;
 *   - a mapped file (model.mmap on): the original pages stay resident as well, so every repacked byte counts twice;
 *   - tied embeddings (0.8B, 2B, 4B): the output matrix is the token embedding again; where its type repacks, the
 *     output becomes a second, repacked copy of the whole embedding (ARM with dotprod: Q6_K / Q8_0).
 * Pure: the CPU's features come from the probe.
 */

/** ggml type ids (ggml.h) of the types some CPU repacks. */
const Q4_0 = 2;
const Q4_1 = 3;
const Q8_0 = 8;
const Q2_K = 10;
const Q4_K = 12;
const Q5_K = 13;
const Q6_K = 14;
const IQ4_NL = 20;
const IQ4_XS = 23;
const MXFP4 = 39;

/** SIMD features of the CPU, as /proc/cpuinfo names them (x86 `flags`, ARM `Features`). */
export interface CpuSimd {
    arch: string;
    features: readonly string[];
}

export interface WeightTensor {
    name: string;
    ggmlType: number;
    /** innermost first */
    dims: readonly number[];
    bytes: number;
}

/** The ggml types this CPU repacks. */
export function repackedTypes(cpu: CpuSimd): Set<number> {
    const has = (f: string): boolean => cpu.features.includes(f);
    if (cpu.arch === "x64" || cpu.arch === "ia32") {
        if (!has("avx2")) return new Set();
        return new Set([Q4_0, Q4_K, IQ4_NL, MXFP4, ...(has("avx512f") ? [Q2_K] : []), ...amxTypes(cpu)]);
    }
    if (cpu.arch === "arm64" && (has("asimddp") || has("i8mm")))
        return new Set([Q4_0, Q4_K, Q5_K, Q6_K, IQ4_NL, MXFP4, Q8_0]);
    return new Set();
}

/** The types the AMX buffer takes on this CPU (none without AMX). */
function amxTypes(cpu: CpuSimd): number[] {
    return (cpu.arch === "x64" && cpu.features.includes("amx_int8")) ? [Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS] : [];
}

/** Bytes the AMX layout adds per block of the file's layout, by type: [block bytes, added bytes]. */
const AMX_BLOCK_GROWTH: Readonly<Record<number, readonly [number, number]>> = {[Q8_0]: [34, 4], [Q4_K]: [144, 4], [Q5_K]: [176, 4], [IQ4_XS]: [136, 2]};

export interface RepackCost {
    /** bytes of weights moved into the repacked layout */
    repackedBytes: number;
    /** what this adds to the process's resident memory beyond the file's tensor data */
    extraBytes: number;
}

/** The extra resident memory repacking costs for these tensors on this CPU. */
export function repackCost(tensors: readonly WeightTensor[], cpu: CpuSimd, mmap: boolean): RepackCost {
    const types = repackedTypes(cpu);
    // llama.cpp needs whole groups of 8 (or 4) rows; every Qwen3.5 matrix has a multiple of 8 rows
    const repacks = (t: WeightTensor): boolean => types.has(t.ggmlType) && t.dims.length >= 2 && (t.dims[1] ?? 0) % 8 === 0;
    const matrices = tensors.filter((t) => t.name !== "token_embd.weight" && /\.weight$/.test(t.name) && !/norm|ssm_conv1d/.test(t.name));
    const repackedBytes = matrices.filter(repacks).reduce((sum, t) => sum + t.bytes, 0);
    const embedding = tensors.find((t) => t.name === "token_embd.weight");
    const tiedOutputCopy = embedding && !tensors.some((t) => t.name === "output.weight") && repacks(embedding) ? embedding.bytes : 0;
    // the AMX layout is a little larger than the file's: every packed matrix, the tied output copy included
    const amx = new Set(amxTypes(cpu));
    const growth = (t: WeightTensor): number => {
        const g = AMX_BLOCK_GROWTH[t.ggmlType];
        return amx.has(t.ggmlType) && g ? Math.round(t.bytes * g[1] / g[0]) : 0;
    };
    const amxGrowth = matrices.filter(repacks).reduce((sum, t) => sum + growth(t), 0) + (tiedOutputCopy > 0 && embedding ? growth(embedding) : 0);
    return {repackedBytes: repackedBytes + tiedOutputCopy, extraBytes: (mmap ? repackedBytes : 0) + tiedOutputCopy + amxGrowth};
}
