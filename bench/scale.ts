#!/usr/bin/env node
/**
 * `npm run bench:scale`: what a user of a real-size Qwen3.5 waits for, through the daemon, beside native
 * llama.cpp on the same file. The models are the project's real-shape ones (test/support/scale.ts: the published
 * dimensions and vocabulary, Q4_K_M, random weights). Per model: load time (spawn to `online`), time to first
 * token of a short request (the system prompt only) and of a ~1,000-token prompt, prompt and generation tokens/s
 * beside llama-bench (same file, threads and batch size: -b/-ub = the daemon's batch), and the daemon's peak
 * RSS beside the plan. Writes bench/results/scale-latest.json.
 */
import {mkdirSync, statSync, writeFileSync} from "node:fs";
import {availableParallelism, cpus, loadavg} from "node:os";
import {dirname, join} from "node:path";
import {fileURLToPath} from "node:url";
import {spawn} from "node:child_process";
import type {ModelVariant} from "../src/models/catalog.js";
import {nodeLlamaCppVersion} from "../src/version.js";
import {startBroker} from "../test/support/broker.js";
import {runCli, spawnDaemon, tempDir} from "../test/support/daemon.js";
import {TestClient} from "../test/support/mqtt-client.js";
import {SCALE_MODEL_DIR, scaleModel, wordsForTokens, words} from "../test/support/scale.js";
import {ensureNativeBench} from "./engine/native.js";
import {processMemory} from "./proc.js";
import {median} from "./stats.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const USAGE = `usage: npm run bench:scale -- [options]
  --variants LIST     0.8b,2b (default both)
  --threads N         generation threads (default: every CPU, ${availableParallelism()} here)
  --reps N            repetitions of each measurement, median reported (default 3)
  --prompt-tokens N   the long prompt (default 1000)
  --gen-tokens N      tokens generated for the generation rate (default 128)
  --batch N           inference.batchSize, also llama-bench's -b/-ub (default 128, the daemon's default)
  --no-native         skip llama-bench (no ratios)
  --out FILE          (default bench/results/scale-latest.json)
`;

interface Options {
    variants: ModelVariant[];
    threads: number;
    reps: number;
    promptTokens: number;
    genTokens: number;
    batch: number;
    native: boolean;
    out: string;
}

function parseOptions(argv: string[]): Options {
    const o: Options = {variants: ["0.8b", "2b"], threads: availableParallelism(), reps: 3, promptTokens: 1000, genTokens: 128, batch: 128,
        native: true, out: join(ROOT, "bench", "results", "scale-latest.json")};
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const value = (): string => {
            const v = argv[++i];
            if (v === undefined) throw new Error(`${a} needs a value`);
            return v;
        };
        const int = (): number => {
            const n = Number(value());
            if (!Number.isInteger(n) || n < 1) throw new Error(`${a} needs a positive integer`);
            return n;
        };
        if (a === "--variants") o.variants = value().split(",").map((v) => v.trim().toLowerCase() as ModelVariant);
        else if (a === "--threads") o.threads = int();
        else if (a === "--reps") o.reps = int();
        else if (a === "--prompt-tokens") o.promptTokens = int();
        else if (a === "--gen-tokens") o.genTokens = int();
        else if (a === "--batch") o.batch = int();
        else if (a === "--no-native") o.native = false;
        else if (a === "--out") o.out = value();
        else throw new Error(`unknown option ${a}`);
    }
    return o;
}

interface NativeRates {
    promptTps: number;
    genTps: number;
}

function llamaBench(binary: string, model: string, o: Options, promptTokens: number): Promise<NativeRates> {
    const args = ["-m", model, "-p", String(promptTokens), "-n", String(o.genTokens), "-t", String(o.threads), "-b", String(o.batch),
        "-ub", String(o.batch), "-mmp", "0", "-r", String(o.reps), "-o", "json"];
    return new Promise((resolve, reject) => {
        const child = spawn(binary, args, {stdio: ["ignore", "pipe", "pipe"]});
        let out = "";
        let err = "";
        child.stdout.on("data", (d: Buffer) => { out += d.toString(); });
        child.stderr.on("data", (d: Buffer) => { err += d.toString(); });
        child.on("close", (code) => {
            if (code !== 0) return reject(new Error(`llama-bench exited ${code}: ${err.slice(-800)}`));
            const rows = JSON.parse(out) as Array<{n_prompt: number; n_gen: number; avg_ts: number}>;
            const pp = rows.find((r) => r.n_prompt > 0 && r.n_gen === 0);
            const tg = rows.find((r) => r.n_gen > 0 && r.n_prompt === 0);
            if (!pp || !tg) return reject(new Error(`unexpected llama-bench output: ${out.slice(0, 300)}`));
            resolve({promptTps: pp.avg_ts, genTps: tg.avg_ts});
        });
    });
}

interface Row {
    model: string;
    fileBytes: number;
    loadMs: number;
    modelLoadLogMs: number | null;
    ttftShortMs: number;
    shortPromptTokens: number;
    ttftLongMs: number;
    longPromptTokens: number;
    promptTps: number;
    genTps: number;
    native: NativeRates | null;
    peakRssBytes: number;
    planBytes: number;
}

type Reply = Record<string, unknown> & {usage: {promptTokens: number; completionTokens: number}; timing: {ttftMs: number; tokensPerSecond: number}};

async function measure(variant: ModelVariant, o: Options, brokerUrl: string, client: TestClient, nativeBinary: string | null,
    say: (line: string) => void): Promise<Row> {
    const model = await scaleModel(variant, "Q4_K_M");
    const args = ["--model-dir", SCALE_MODEL_DIR, "--model-variant", variant, "--model-quants", "Q4_K_M", "--model-download", "false",
        "--inference-batch-size", String(o.batch)];
    const plan = runCli(["plan", "--json", ...args]);
    await plan.exited;
    const planned = (JSON.parse(plan.stdout()) as {choice: {requiredBytes: number}}).choice.requiredBytes;
    const device = `bench-scale-${variant.replace(".", "")}`;
    const base = `qwen-edge/${device}`;
    await client.subscribe(`${base}/#`);
    const state = await tempDir("qe-bench-scale-");
    const started = Date.now();
    const daemon = spawnDaemon({brokerUrl, modelPath: "", deviceId: device, stateDir: state.path, args: [...args,
        "--inference-threads", String(o.threads), "--inference-temperature", "0", "--inference-max-payload-bytes", "262144",
        "--log-level", "info"]});
    try {
        await Promise.race([
            client.waitFor(`${device} online`, (m) => m.topic === `${base}/status` && m.json?.state === "online", 600_000),
            daemon.exited.then((e) => { throw new Error(`the daemon exited (${e.code ?? e.signal}) before online: ${daemon.stdout().slice(-1500)} ${daemon.stderr().slice(-500)}`); })
        ]);
        const loadMs = Date.now() - started;
        const loaded = daemon.logs.find((l) => l.message === "model loaded");
        let n = 0;
        const ask = async (body: Record<string, unknown>): Promise<Reply> => {
            const id = `${device}-${++n}`;
            await client.publish(`${base}/request`, JSON.stringify({id, ...body, thinking: false, timeoutMs: 600_000}));
            const reply = (await client.waitFor(`reply ${id}`, (m) => m.topic === `${base}/response` && m.json?.id === id, 600_000)).json!;
            if (reply.status !== "ok") throw new Error(`request ${id} failed: ${JSON.stringify(reply).slice(0, 400)}`);
            return reply as Reply;
        };
        await ask({prompt: "Hi", maxTokens: 16}); // the first generation of a process is slower: warm up
        const wordCount = await wordsForTokens(client, `${base}/request`, `${base}/response`, o.promptTokens, 4096);
        const short: Reply[] = [];
        const long: Reply[] = [];
        const gen: Reply[] = [];
        for (let r = 0; r < o.reps; r++) {
            short.push(await ask({prompt: "Hi", maxTokens: 1}));
            long.push(await ask({prompt: words(wordCount, r), maxTokens: 1}));
            gen.push(await ask({prompt: "Hi", maxTokens: o.genTokens}));
            say(`  ${variant} round ${r + 1}: ttft short ${short.at(-1)!.timing.ttftMs} ms, long ${long.at(-1)!.timing.ttftMs} ms, ` +
                `generation ${gen.at(-1)!.timing.tokensPerSecond} tok/s`);
        }
        const peakRssBytes = processMemory(daemon.child.pid!).hwmBytes;
        const longPromptTokens = long[0]!.usage.promptTokens;
        const ttftLongMs = median(long.map((r) => r.timing.ttftMs)) ?? NaN;
        const native = nativeBinary ? await llamaBench(nativeBinary, model, o, longPromptTokens) : null;
        return {
            model: `Qwen3.5-${variant === "0.8b" ? "0.8B" : variant.toUpperCase()}-Q4_K_M`, fileBytes: statSync(model).size,
            loadMs, modelLoadLogMs: typeof loaded?.ms === "number" ? loaded.ms : null,
            ttftShortMs: median(short.map((r) => r.timing.ttftMs)) ?? NaN, shortPromptTokens: short[0]!.usage.promptTokens,
            ttftLongMs, longPromptTokens, promptTps: longPromptTokens / (ttftLongMs / 1000),
            genTps: median(gen.map((r) => r.timing.tokensPerSecond)) ?? NaN, native, peakRssBytes, planBytes: planned
        };
    } finally {
        await daemon.term();
        await state.dispose();
    }
}

function table(rows: Row[], threads: number): string {
    const mib = (b: number): string => `${Math.round(b / 2 ** 20)}`;
    const ratio = (a: number, b: number | undefined): string => b ? (a / b).toFixed(2) : "-";
    const head = ["model", "load s", "TTFT short ms", "TTFT ~1k ms", "prompt tok/s (native, ratio)", "gen tok/s (native, ratio)", "peak RSS / plan MiB"];
    const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
    for (const r of rows) {
        lines.push(`| ${[
            `${r.model} (${(r.fileBytes / 1e6).toFixed(0)} MB)`, (r.loadMs / 1000).toFixed(1),
            `${r.ttftShortMs.toFixed(0)} (${r.shortPromptTokens} tok)`, `${r.ttftLongMs.toFixed(0)} (${r.longPromptTokens} tok)`,
            `${r.promptTps.toFixed(1)} (${r.native?.promptTps.toFixed(1) ?? "-"}, ${ratio(r.promptTps, r.native?.promptTps)})`,
            `${r.genTps.toFixed(1)} (${r.native?.genTps.toFixed(1) ?? "-"}, ${ratio(r.genTps, r.native?.genTps)})`,
            `${mib(r.peakRssBytes)} / ${mib(r.planBytes)} (${(r.planBytes / r.peakRssBytes).toFixed(3)})`
        ].join(" | ")} |`);
    }
    return `${lines.join("\n")}\n\n${threads} thread(s); native = llama-bench built from node-llama-cpp's bundled llama.cpp, same file, -b/-ub = the daemon's batch`;
}

async function main(): Promise<void> {
    if (process.argv.includes("--help")) return void process.stdout.write(USAGE);
    let o: Options;
    try {
        o = parseOptions(process.argv.slice(2));
    } catch (err) {
        process.stderr.write(`${(err as Error).message}\n${USAGE}`);
        process.exitCode = 2;
        return;
    }
    const say = (line: string): void => void process.stdout.write(`${line}\n`);
    const startLoad = loadavg()[0] ?? 0;
    const native = o.native ? await ensureNativeBench(ROOT, join(ROOT, "bench", "cache"), say) : null;
    const broker = await startBroker();
    const client = await TestClient.connect(broker.url);
    const rows: Row[] = [];
    try {
        for (const variant of o.variants) {
            say(`${variant}: model in ${SCALE_MODEL_DIR}`);
            rows.push(await measure(variant, o, broker.url, client, native?.binary ?? null, say));
        }
    } finally {
        await client.close();
        await broker.dispose();
    }
    const report = {date: new Date().toISOString(), cpu: cpus()[0]?.model ?? "unknown", cores: availableParallelism(),
        nodeLlamaCpp: nodeLlamaCppVersion(), nativeTag: native?.tag ?? null, loadAverage: {start: startLoad, end: loadavg()[0] ?? 0},
        options: {...o, out: undefined}, rows};
    mkdirSync(dirname(o.out), {recursive: true});
    writeFileSync(o.out, `${JSON.stringify(report, null, 2)}\n`);
    say(`\n${table(rows, o.threads)}\nload average ${startLoad.toFixed(2)} -> ${report.loadAverage.end.toFixed(2)}; written to ${o.out}`);
}

main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
});
