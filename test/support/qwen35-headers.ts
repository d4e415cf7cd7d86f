/**
 * Header-only GGUFs with the real dimensions of the four Qwen3.5 variants (from the catalog), so the memory
 * estimates run over the real numbers without gigabytes of weights. Tensor types follow llama.cpp's
 * Q4_K_M / Q8_0 recipes (src/models/qwen35-tensors.ts), because the weights' size is what the planner compares.
 * The vocabulary is given by size only ("none" tokenizer, qwen35.vocab_size and the embedding's rows).
 */
import {mkdir, writeFile} from "node:fs/promises";
import {join} from "node:path";
import {MODEL_VARIANTS, catalogVariant, type ModelVariant} from "../../src/models/catalog.js";
import {qwen35Tensors, tensorTypeBytes, type RecipeQuant} from "../../src/models/qwen35-tensors.js";
import {encodeGguf, str, u32, type GgufMetaValue} from "../../src/testing/gguf-writer.js";
import {qwen35ArchitectureMetadata} from "../../src/testing/qwen35-metadata.js";

export type HeaderQuant = RecipeQuant;

export function qwen35HeaderMetadata(variant: ModelVariant, quant: HeaderQuant): Record<string, GgufMetaValue> {
    const c = catalogVariant(variant);
    return {
        ...qwen35ArchitectureMetadata(c.architecture, `Qwen3.5-${c.sizeLabel} (header-only fixture)`, quant),
        "qwen35.vocab_size": u32(c.architecture.vocabSize),
        // 248,320 token strings would add ~7 MB per file and change no estimate but the vocabulary's (its size is known)
        "tokenizer.ggml.model": str("none")
    };
}

export function encodeQwen35Header(variant: ModelVariant, quant: HeaderQuant): Buffer {
    const tensors = qwen35Tensors(catalogVariant(variant).architecture, quant).map((t) => ({name: t.name, dims: t.dims, type: t.type}));
    return encodeGguf(qwen35HeaderMetadata(variant, quant), tensors, {headerOnly: true});
}

/** Tensor data bytes the header describes (what the real file would hold after its header). */
export function headerDataBytes(variant: ModelVariant, quant: HeaderQuant): number {
    return qwen35Tensors(catalogVariant(variant).architecture, quant).reduce((sum, t) => sum + tensorTypeBytes(t.type, t.dims), 0);
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
