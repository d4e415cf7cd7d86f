/**
 * The real-scale tier's parts: Qwen3.5-shaped models made by the project's generator (the published
 * dimensions and 248,320-token vocabulary, llama.cpp's Q4_K_M / Q8_0 tensor types, random weights) and
 * prompts of a chosen token count.
 */
import {existsSync, mkdirSync, statSync} from "node:fs";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {modelFileName, type ModelVariant} from "../../src/models/catalog.js";
import {readGgufLayout} from "../../src/models/gguf-check.js";
import {writeScaleModel, type ScaleQuant} from "../../src/testing/scale-model.js";
import type {TestClient} from "./mqtt-client.js";

/** Where the models go: $QE_SCALE_MODELS (kept between runs) or a directory under the system's temp dir. */
export const SCALE_MODEL_DIR = process.env.QE_SCALE_MODELS ?? join(tmpdir(), "qwen-edge-scale-models");

/**
 * The model file under its catalog name in SCALE_MODEL_DIR, written when absent (1-3 s). A file that is
 * there with the size its header promises is reused: the generator is deterministic.
 */
export async function scaleModel(variant: ModelVariant, quant: ScaleQuant): Promise<string> {
    mkdirSync(SCALE_MODEL_DIR, {recursive: true});
    const path = join(SCALE_MODEL_DIR, modelFileName(variant, quant));
    if (existsSync(path)) {
        const layout = await readGgufLayout(path).catch(() => null);
        if (layout && statSync(path).size >= layout.requiredBytes) return path;
    }
    writeScaleModel(path, {variant, quant, kind: "endless"});
    return path;
}

const WORDS = ["sensor", "kitchen", "temperature", "door", "light", "reading", "value", "device", "window", "garden"];

/** `count` words of a fixed cycle; `shift` starts it elsewhere, so parallel prompts differ. */
export function words(count: number, shift = 0): string {
    return Array.from({length: count}, (_, i) => WORDS[(i + shift) % WORDS.length]).join(" ");
}

/**
 * The number of words whose prompt comes to `targetTokens` tokens with the daemon's chat template and default
 * system prompt. The daemon tokenizes a too-long prompt and refuses it before evaluating anything, naming the
 * count (exceed_context_size), so two such probes measure the prompt's tokens per word at no cost. The daemon
 * must accept payloads of ~16 bytes a word (--inference-max-payload-bytes).
 */
export async function wordsForTokens(client: TestClient, requestTopic: string, replyTopic: string, targetTokens: number,
    contextSize: number): Promise<number> {
    const probe = async (count: number): Promise<number> => {
        const id = `probe-${count}-${Math.random().toString(16).slice(2)}`;
        await client.publish(requestTopic, JSON.stringify({id, prompt: words(count), maxTokens: 1, replyTo: replyTopic}));
        const reply = await client.waitFor(`exceed_context_size reply to ${id}`, (m) => m.topic === replyTopic && m.json?.id === id, 60_000);
        const error = reply.json?.error as {code?: string; promptTokens?: number} | undefined;
        if (error?.code !== "exceed_context_size" || typeof error.promptTokens !== "number")
            throw new Error(`probe ${id}: expected exceed_context_size with promptTokens, got ${reply.text.slice(0, 300)}`);
        return error.promptTokens;
    };
    // every word is at least one token, so prompts of contextSize words and more never fit (payloads up to ~100 KB)
    const [a, b] = [contextSize, Math.ceil(contextSize * 1.5)];
    const [ta, tb] = [await probe(a), await probe(b)];
    const perWord = (tb - ta) / (b - a);
    return Math.floor(a + (targetTokens - ta) / perWord);
}

export const MiB = 1024 * 1024;
export const mib = (bytes: number): string => `${(bytes / MiB).toFixed(0)} MiB`;
