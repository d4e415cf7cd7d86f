/**
 * Builds bench/engine/decode-timer.c (an LD_PRELOAD shim that times llama_decode inside the
 * node-llama-cpp process) into bench/cache with the system C compiler. Linux only; without a
 * compiler the benchmark runs without the in-decode columns.
 */
import {execFile} from "node:child_process";
import {stat} from "node:fs/promises";
import {join} from "node:path";
import {promisify} from "node:util";

const exec = promisify(execFile);

export async function ensureDecodeTimer(root: string, cacheDir: string, log: (line: string) => void): Promise<string | null> {
    if (process.platform !== "linux") return null;
    const source = join(root, "bench", "engine", "decode-timer.c");
    const lib = join(cacheDir, "decode-timer.so");
    const [src, built] = await Promise.all([stat(source), stat(lib).catch(() => null)]);
    if (built && built.mtimeMs >= src.mtimeMs) return lib;
    try {
        await exec("cc", ["-O2", "-Wall", "-Wextra", "-shared", "-fPIC", "-o", lib, source, "-ldl", "-lpthread"]);
        log(`built ${lib}`);
        return lib;
    } catch (err) {
        log(`no decode timer (cc failed: ${err instanceof Error ? err.message.split("\n")[0] : String(err)}): in-decode columns left out`);
        return null;
    }
}
