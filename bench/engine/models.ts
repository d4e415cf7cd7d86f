/**
 * The benchmark models: qwen35 "endless" models (never emit an end token, so every run generates
 * exactly the tokens asked for) made with the project's own generator, cached under bench/cache.
 */
import {mkdir, stat} from "node:fs/promises";
import {join} from "node:path";
import {writeTinyQwen35} from "../../src/testing/tiny-qwen35.js";

export interface BenchModel {
    /** short name used in the table: small, medium, large */
    name: string;
    hidden: number;
    layers: number;
    feedForward: number;
    path: string;
    bytes: number;
}

/** About 13 MB, 70 MB and 300 MB+ (F16 weights); the large one is the size class of a real 0.8B's hot set. */
const SHAPES = [
    {name: "small", hidden: 256, layers: 8, feedForward: 512},
    {name: "medium", hidden: 512, layers: 10, feedForward: 1536},
    {name: "large", hidden: 1024, layers: 11, feedForward: 3072}
] as const;

export const MODEL_NAMES: readonly string[] = SHAPES.map((s) => s.name);

export async function ensureModels(cacheDir: string, names: readonly string[], log: (line: string) => void): Promise<BenchModel[]> {
    const dir = join(cacheDir, "engine-models");
    await mkdir(dir, {recursive: true});
    const out: BenchModel[] = [];
    for (const s of SHAPES) {
        if (!names.includes(s.name)) continue;
        const path = join(dir, `qwen35-h${s.hidden}-l${s.layers}-ff${s.feedForward}-endless-s1.gguf`);
        let bytes = await stat(path).then((st) => st.size, () => 0);
        if (bytes === 0) {
            log(`making ${s.name} model ${path}`);
            bytes = (await writeTinyQwen35(path, {kind: "endless", hidden: s.hidden, layers: s.layers, feedForward: s.feedForward, seed: 1})).bytes;
        }
        out.push({...s, path, bytes});
    }
    return out;
}
