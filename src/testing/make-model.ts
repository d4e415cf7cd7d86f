#!/usr/bin/env node
// Writes a tiny qwen35 test model: node dist/src/testing/make-model.js OUT.gguf [--kind scripted]
// [--hidden 256] [--layers 8] [--seed N] [--ff N] [--merges N] [--context N] [--f32] [--name TEXT]
import {writeTinyQwen35, type TinyModelKind, type TinyQwen35Options} from "./tiny-qwen35.js";

const USAGE = "usage: make-model OUT.gguf [--kind random|scripted|endless] [--hidden N] [--layers N] [--seed N]"
    + " [--ff N] [--merges N] [--context N] [--f32] [--name TEXT]\n";

function parseArgs(argv: string[]): {out: string; options: TinyQwen35Options} {
    const options: TinyQwen35Options = {};
    let out: string | undefined;
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
                if (kind !== "random" && kind !== "scripted" && kind !== "endless") throw new Error(`unknown kind ${kind}`);
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
            default:
                if (arg.startsWith("-") || out != null) throw new Error(`unexpected argument ${arg}`);
                out = arg;
        }
    }
    if (out == null) throw new Error("missing output path");
    return {out, options};
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
    const r = await writeTinyQwen35(parsed.out, parsed.options);
    process.stdout.write(`path ${r.path}\nbytes ${r.bytes}\nsha256 ${r.sha256}\n`);
}

main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
});
