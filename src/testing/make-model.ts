#!/usr/bin/env node
// Writes a qwen35 test model: a tiny one (node dist/src/testing/make-model.js OUT.gguf [--kind scripted] ...;
// --kind scripted --text TEXT answers TEXT; --kind tool-call --tool NAME --args JSON calls a tool),
// or one with the real shape of a published Qwen3.5 file (--scale 0.8b --quant Q4_K_M; random weights).
import {isModelVariant, type ModelVariant} from "../models/catalog.js";
import {SCALE_QUANTS, writeScaleModel, type ScaleQuant} from "./scale-model.js";
import {writeTinyQwen35, type TinyModelKind, type TinyQwen35Options} from "./tiny-qwen35.js";

const USAGE = "usage: make-model OUT.gguf [--kind random|scripted|endless] [--hidden N] [--layers N] [--seed N]"
    + " [--ff N] [--merges N] [--context N] [--f32] [--name TEXT]\n"
    + "       make-model OUT.gguf --kind scripted --text TEXT      answers TEXT (default: \"Hello from qwen-edge.\")\n"
    + "       make-model OUT.gguf --kind tool-call --tool NAME [--args JSON]\n"
    + "                                                   calls NAME with the JSON object (default {}) in Qwen3.5's syntax\n"
    + "       make-model OUT.gguf --scale 0.8b|2b|4b|9b [--quant Q4_K_M|Q8_0] [--kind endless|random]\n"
    + "  --scale writes the real shape of that Qwen3.5 (full vocabulary, llama.cpp's tensor types) with random weights\n";

interface ScaleRequest {
    variant: ModelVariant;
    quant: ScaleQuant;
}

function parseArgs(argv: string[]): {out: string; options: TinyQwen35Options; scale: ScaleRequest | null} {
    const options: TinyQwen35Options = {};
    let out: string | undefined;
    let variant: ModelVariant | null = null;
    let quant: ScaleQuant = "Q4_K_M";
    let tool: string | null = null;
    let args: Record<string, unknown> | null = null;
    const int = (flag: string, v: string | undefined): number => {
        const n = Number(v);
        if (v == null || !Number.isSafeInteger(n)) throw new Error(`${flag} needs an integer`);
        return n;
    };
    for (let i = 0; i < argv.length; i++) {
        const arg = argv[i] ?? "";
        const next = (): string | undefined => argv[++i];
        switch (arg) {
            case "--kind": {
                const kind = next();
                if (kind !== "random" && kind !== "scripted" && kind !== "endless" && kind !== "tool-call") throw new Error(`unknown kind ${kind}`);
                options.kind = kind satisfies TinyModelKind;
                break;
            }
            case "--hidden": options.hidden = int(arg, next()); break;
            case "--layers": options.layers = int(arg, next()); break;
            case "--seed": options.seed = int(arg, next()); break;
            case "--ff": options.feedForward = int(arg, next()); break;
            case "--merges": options.merges = int(arg, next()); break;
            case "--context": options.contextLength = int(arg, next()); break;
            case "--f32": options.weightType = "f32"; break;
            case "--name": options.name = next(); break;
            case "--text": {
                const text = next();
                if (text == null || text === "") throw new Error("--text needs a non-empty text");
                options.text = text;
                break;
            }
            case "--tool": tool = next() ?? ""; break;
            case "--args": {
                let value: unknown;
                try {
                    value = JSON.parse(next() ?? "");
                } catch {
                    value = undefined;
                }
                if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error("--args needs a JSON object");
                args = value as Record<string, unknown>;
                break;
            }
            case "--scale": {
                const v = next()?.toLowerCase() ?? "";
                if (!isModelVariant(v)) throw new Error(`--scale takes 0.8b, 2b, 4b or 9b (got ${v || "nothing"})`);
                variant = v;
                break;
            }
            case "--quant": {
                const q = next() ?? "";
                if (!(SCALE_QUANTS as readonly string[]).includes(q)) throw new Error(`--quant takes ${SCALE_QUANTS.join(" or ")} (got ${q || "nothing"})`);
                quant = q as ScaleQuant;
                break;
            }
            default:
                if (arg.startsWith("-") || out != null) throw new Error(`unexpected argument ${arg}`);
                out = arg;
        }
    }
    if (out == null) throw new Error("missing output path");
    if (options.text !== undefined && options.kind !== "scripted") throw new Error("--text is for --kind scripted");
    if ((tool !== null || args !== null) && options.kind !== "tool-call") throw new Error("--tool and --args are for --kind tool-call");
    if (options.kind === "tool-call") {
        if (!tool) throw new Error("--kind tool-call needs --tool NAME");
        options.toolCall = {name: tool, args: args ?? {}};
    }
    if (variant !== null && (options.kind === "scripted" || options.kind === "tool-call")) throw new Error(`--scale models are random or endless, not ${options.kind}`);
    return {out, options, scale: variant === null ? null : {variant, quant}};
}

async function main(): Promise<void> {
    let parsed: ReturnType<typeof parseArgs>;
    try {
        parsed = parseArgs(process.argv.slice(2));
    } catch (err) {
        process.stderr.write(`${(err as Error).message}\n${USAGE}`);
        process.exitCode = 2;
        return;
    }
    if (parsed.scale) {
        const started = Date.now();
        const kind = parsed.options.kind === "random" ? "random" : "endless";
        const r = writeScaleModel(parsed.out, {...parsed.scale, kind});
        process.stdout.write(`path ${r.path}\nbytes ${r.bytes}\nvocabulary ${r.vocabSize}\nseconds ${((Date.now() - started) / 1000).toFixed(1)}\n`);
        return;
    }
    const r = await writeTinyQwen35(parsed.out, parsed.options);
    process.stdout.write(`path ${r.path}\nbytes ${r.bytes}\nsha256 ${r.sha256}\n`);
}

main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
});
