/**
 * Native llama.cpp: `llama-bench` built once from the very source node-llama-cpp bundles
 * (node_modules/node-llama-cpp/llama/gitRelease.bundle), so both sides run the same ggml code.
 * Built with GGML_NATIVE (this CPU's instructions) and llama.cpp's default OpenMP.
 */
import {spawn} from "node:child_process";
import {access, readFile} from "node:fs/promises";
import {availableParallelism} from "node:os";
import {join} from "node:path";

export interface NativeResult {
    threads: number;
    /** generation tokens/s (tg128: one token per decode, no sampling), mean over the repetitions */
    genTps: number;
    genStdevTps: number;
    /** prompt processing tokens/s (pp32) */
    promptTps: number;
    /** estimated time to first token for a 32-token prompt: pp32 time + one generated token */
    ttftMs: number;
}

export interface NativeBuild {
    binary: string;
    /** llama.cpp release tag of the bundle */
    tag: string;
    builtNow: boolean;
    buildSeconds: number;
}

function run(cmd: string, args: string[], cwd: string, log: (line: string) => void): Promise<string> {
    return new Promise((resolve, reject) => {
        log(`$ ${cmd} ${args.join(" ")}`);
        const child = spawn(cmd, args, {cwd, stdio: ["ignore", "pipe", "pipe"]});
        let out = "";
        let err = "";
        child.stdout.on("data", (d: Buffer) => { out += d.toString(); });
        child.stderr.on("data", (d: Buffer) => { err += d.toString(); });
        child.on("error", reject);
        child.on("close", (code) => {
            if (code === 0) resolve(out);
            else reject(new Error(`${cmd} exited with ${code}: ${(err || out).slice(-2000)}`));
        });
    });
}

/** Clones the bundle and builds the llama-bench target only; skipped when the binary exists. */
export async function ensureNativeBench(root: string, cacheDir: string, log: (line: string) => void): Promise<NativeBuild> {
    const llamaDir = join(root, "node_modules", "node-llama-cpp", "llama");
    const info = JSON.parse(await readFile(join(llamaDir, "llama.cpp.info.json"), "utf8")) as {tag: string};
    const src = join(cacheDir, "llama.cpp");
    const binary = join(src, "build", "bin", "llama-bench");
    if (await access(binary).then(() => true, () => false)) return {binary, tag: info.tag, builtNow: false, buildSeconds: 0};
    const started = Date.now();
    if (!await access(join(src, "CMakeLists.txt")).then(() => true, () => false)) {
        await run("git", ["clone", "--quiet", join(llamaDir, "gitRelease.bundle"), src], root, log);
    }
    // Low priority: the machines this runs on are usually shared with tests.
    await run("nice", ["-n", "19", "cmake", "-S", ".", "-B", "build", "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
        "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DBUILD_SHARED_LIBS=OFF"], src, log);
    await run("nice", ["-n", "19", "cmake", "--build", "build", "--config", "Release", "--target", "llama-bench",
        "-j", String(availableParallelism())], src, log);
    return {binary, tag: info.tag, builtNow: true, buildSeconds: (Date.now() - started) / 1000};
}

interface LlamaBenchRow {
    n_prompt: number;
    n_gen: number;
    avg_ts: number;
    stddev_ts: number;
}

/** One llama-bench run: pp32 and tg128 at `threads`, `reps` repetitions each. */
export async function runNative(binary: string, modelPath: string, threads: number, reps: number, genTokens: number,
    log: (line: string) => void): Promise<NativeResult> {
    const out = await run(binary, ["-m", modelPath, "-p", "32", "-n", String(genTokens), "-t", String(threads),
        "-r", String(reps), "-o", "json"], process.cwd(), log);
    const rows = JSON.parse(out) as LlamaBenchRow[];
    const gen = rows.find((r) => r.n_gen > 0 && r.n_prompt === 0);
    const pp = rows.find((r) => r.n_prompt > 0 && r.n_gen === 0);
    if (!gen || !pp) throw new Error(`unexpected llama-bench output: ${out.slice(0, 500)}`);
    return {threads, genTps: gen.avg_ts, genStdevTps: gen.stddev_ts, promptTps: pp.avg_ts,
        ttftMs: 1000 * (32 / pp.avg_ts + 1 / gen.avg_ts)};
}
