/**
 * `npm run bench:engine`: node-llama-cpp (the daemon's way and lower-level APIs) vs native
 * llama-bench built from the same bundled llama.cpp, per model and thread count. Writes
 * bench/results/engine.json. See docs/ENGINE-SPEED.md for what the numbers showed.
 *
 *   node dist/bench/engine/run.js [--models small,medium,large] [--threads 1,2] [--modes engine,decode]
 *     [--reps 5] [--rounds 3] [--gen-tokens 128] [--no-native] [--prebuilt] [--out FILE]
 *     [--set contextThreads=idealMin,maxThreads=unset,batchSize=512,uvPool=4] [--no-decode-timer]
 *
 * Each node-llama-cpp measurement also reports where a token's time went: per-thread CPU and
 * run-queue wait from /proc/self/task/<tid>/schedstat, and (with the decode timer, on by default)
 * llama_decode's own time measured inside the process, so "in llama.cpp" and "outside it" are
 * separate numbers that can be set against llama-bench's per-token time.
 */
import {execFile} from "node:child_process";
import {mkdir, readFile, rm, writeFile} from "node:fs/promises";
import {availableParallelism, cpus, loadavg, tmpdir} from "node:os";
import {dirname, join, resolve} from "node:path";
import {fileURLToPath} from "node:url";
import type {DecodeTimerReport, NodeMode, NodeResult, NodeSettings} from "./child.js";
import {ensureModels, MODEL_NAMES, type BenchModel} from "./models.js";
import {ensureNativeBench, runNative, type NativeResult} from "./native.js";
import {formatSplitTable, formatTable, type Row} from "./table.js";
import {ensureDecodeTimer} from "./timer.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const MODES: readonly NodeMode[] = ["engine", "completion", "evaluate", "decode"];
const PROMPT = "Write a long story about a small robot that learns to repair old radios in a mountain village.";

interface Options {
    models: string[];
    threads: number[];
    modes: NodeMode[];
    reps: number;
    genTokens: number;
    native: boolean;
    out: string;
    overrides: Partial<NodeSettings>;
    /** a node measurement slower than this is cut off (the broken cases take minutes otherwise) */
    childTimeoutS: number;
    binary: "auto" | "prebuilt";
    /** measurement rounds per cell; the best round is kept */
    rounds: number;
    decodeTimer: boolean;
}

function parseArgs(argv: string[]): Options {
    const cores = availableParallelism();
    const o: Options = {models: [...MODEL_NAMES], threads: Array.from({length: cores}, (_, i) => i + 1), modes: [...MODES], reps: 5,
        genTokens: 128, native: true, out: join(ROOT, "bench", "results", "engine.json"), overrides: {}, childTimeoutS: 180,
        binary: "auto", rounds: 3, decodeTimer: true};
    const list = (v: string | undefined): string[] => (v ?? "").split(",").filter((x) => x !== "");
    for (let i = 0; i < argv.length; i++) {
        const arg = argv[i];
        const next = (): string | undefined => argv[++i];
        switch (arg) {
            case "--models": o.models = list(next()); break;
            case "--threads": o.threads = list(next()).map(Number); break;
            case "--modes": o.modes = list(next()) as NodeMode[]; break;
            case "--reps": o.reps = Number(next()); break;
            case "--gen-tokens": o.genTokens = Number(next()); break;
            case "--no-native": o.native = false; break;
            case "--out": o.out = resolve(next() ?? ""); break;
            case "--child-timeout": o.childTimeoutS = Number(next()); break;
            case "--prebuilt": o.binary = "prebuilt"; break;
            case "--rounds": o.rounds = Number(next()); break;
            case "--no-decode-timer": o.decodeTimer = false; break;
            case "--set":
                for (const kv of list(next())) {
                    const [k, v] = kv.split("=");
                    if (k === undefined || v === undefined) throw new Error(`--set wants key=value, got ${kv}`);
                    (o.overrides as Record<string, unknown>)[k] = /^\d+$/.test(v) ? Number(v) : v;
                }
                break;
            default: throw new Error(`unknown argument ${arg}`);
        }
    }
    for (const m of o.modes) if (!MODES.includes(m)) throw new Error(`unknown mode ${m}`);
    return o;
}

/**
 * `binary`: "auto" loads what the daemon loads (the local OpenMP build from `npm run rebuild:native`
 * when there is one, else the prebuilt); "prebuilt" adds a custom cmake option no build has, which
 * makes node-llama-cpp skip local builds and fall back to its prebuilt binary.
 */
let childSeq = 0;

function runChild(settings: NodeSettings, binary: "auto" | "prebuilt", timeoutS: number, timer: string | null): Promise<NodeResult | {error: string}> {
    const timerOut = join(tmpdir(), `qwen-edge-decode-timer-${process.pid}-${childSeq++}.json`);
    const env: NodeJS.ProcessEnv = {...process.env, UV_THREADPOOL_SIZE: String(settings.uvPool),
        ...(binary === "prebuilt" ? {NODE_LLAMA_CPP_CMAKE_OPTION_QWEN_EDGE_FORCE_PREBUILT: "1"} : {}),
        ...(timer ? {LD_PRELOAD: [timer, process.env.LD_PRELOAD].filter(Boolean).join(" "), QWEN_EDGE_DECODE_TIMER_OUT: timerOut} : {})};
    return new Promise((res) => {
        execFile(process.execPath, [join(dirname(fileURLToPath(import.meta.url)), "child.js"), JSON.stringify(settings)],
            {env, timeout: timeoutS * 1000, killSignal: "SIGKILL", maxBuffer: 1 << 22}, (err, stdout, stderr) => {
                if (err) {
                    res({error: err.killed ? `timed out after ${timeoutS} s` : `${err.message} ${stderr.slice(-500)}`});
                    return;
                }
                const result = JSON.parse(stdout.trim().split("\n").pop() ?? "{}") as NodeResult;
                readFile(timerOut, "utf8").then((text) => { result.decodeTimer = JSON.parse(text) as DecodeTimerReport; }, () => undefined)
                    .finally(() => { void rm(timerOut, {force: true}).then(() => res(result)); });
            });
    });
}

async function main(): Promise<void> {
    const o = parseArgs(process.argv.slice(2));
    const log = (line: string): void => { process.stdout.write(`${line}\n`); };
    const cacheDir = join(ROOT, "bench", "cache");
    const startLoad = loadavg()[0] ?? 0;
    const native = o.native ? await ensureNativeBench(ROOT, cacheDir, log) : null;
    if (native?.builtNow) log(`built llama-bench (${native.tag}) in ${native.buildSeconds.toFixed(0)} s`);
    const models: BenchModel[] = await ensureModels(cacheDir, o.models, log);
    const timer = o.decodeTimer ? await ensureDecodeTimer(ROOT, cacheDir, log) : null;
    const rows: Row[] = [];
    for (const model of models) {
        for (const threads of o.threads) {
            let nat: NativeResult | null = null;
            const node: Row["node"] = {};
            // Rounds alternate native and node-llama-cpp, and each cell keeps its best round: on a
            // shared machine the best of a few short runs estimates the uncontended speed, and both
            // sides get the same chances of a quiet moment.
            for (let round = 0; round < o.rounds; round++) {
                if (native) {
                    const n = await runNative(native.binary, model.path, threads, o.reps, o.genTokens, () => undefined);
                    if (!nat || n.genTps > nat.genTps) nat = n;
                    log(`${model.name} t=${threads} native ${n.genTps.toFixed(0)} tok/s`);
                }
                for (const mode of o.modes) {
                    const settings: NodeSettings = {modelPath: model.path, mode, threads, contextThreads: "number", maxThreads: "threads",
                        batchSize: 128, contextSize: 4096, genTokens: o.genTokens, reps: o.reps, maxSeconds: 20, prompt: PROMPT, uvPool: 1,
                        ...o.overrides};
                    const r = await runChild(settings, o.binary, o.childTimeoutS, timer);
                    const prev = node[mode];
                    if (!prev || "error" in prev || (!("error" in r) && r.genTps > prev.genTps)) node[mode] = r;
                    log(`${model.name} t=${threads} ${mode} ${"error" in r ? r.error : `${r.genTps.toFixed(0)} tok/s (${r.buildType})`}`);
                }
            }
            rows.push({model: model.name, modelBytes: model.bytes, threads, native: nat, node});
        }
    }
    const report = {
        date: new Date().toISOString(), cpu: cpus()[0]?.model ?? "unknown", cores: availableParallelism(),
        loadAverage: {start: startLoad, end: loadavg()[0] ?? 0}, nativeTag: native?.tag ?? null,
        options: {...o, out: undefined}, rows
    };
    await mkdir(dirname(o.out), {recursive: true});
    await writeFile(o.out, `${JSON.stringify(report, null, 2)}\n`);
    process.stdout.write(`\n${formatTable(rows, o.modes)}\n\n${formatSplitTable(rows, o.modes)}\n\nload average ${startLoad.toFixed(2)} -> ${report.loadAverage.end.toFixed(2)}`
        + ` (a busy machine skews every number); written to ${o.out}\n`);
}

main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
});
