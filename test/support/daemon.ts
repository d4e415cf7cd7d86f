/** The built daemon as a child process, with its JSON log lines collected for assertions. */
import {spawn, type ChildProcess} from "node:child_process";
import {mkdtemp, rm} from "node:fs/promises";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {fileURLToPath} from "node:url";

export const MAIN = fileURLToPath(new URL("../../src/launcher.cjs", import.meta.url));

export interface DaemonProcess {
    child: ChildProcess;
    logs: Array<Record<string, unknown>>;
    stdout(): string;
    stderr(): string;
    exited: Promise<{code: number | null; signal: NodeJS.Signals | null}>;
    waitForLog(what: string, match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
    term(): Promise<{code: number | null; signal: NodeJS.Signals | null}>;
    kill(): Promise<{code: number | null; signal: NodeJS.Signals | null}>;
}

export interface DaemonOptions {
    brokerUrl: string;
    modelPath: string;
    deviceId: string;
    stateDir: string;
    /** more CLI arguments */
    args?: string[];
    env?: NodeJS.ProcessEnv;
    command?: string;
    /** run under this command, which must exec its trailing arguments (e.g. `unshare -m sh -c '...; exec "$@"' sh`) */
    prefix?: string[];
}

/** Arguments every test daemon gets: one thread (2-core machines), greedy sampling, a small context. */
export function baseArgs(o: DaemonOptions): string[] {
    const base = [
        "--mqtt-url", o.brokerUrl, ...(o.modelPath !== "" ? ["--model-path", o.modelPath] : []), "--device-id", o.deviceId, "--state-dir", o.stateDir,
        "--inference-threads", "1", "--inference-context-size", "1024", "--inference-temperature", "0",
        "--inference-presence-penalty", "0", "--mqtt-reconnect-min-ms", "200", "--mqtt-reconnect-max-ms", "1000",
        "--log-level", "debug"
    ];
    // A flag given in o.args wins over the base one.
    const out: string[] = [];
    for (let i = 0; i < base.length; i += 2) if (!o.args?.includes(base[i]!)) out.push(base[i]!, base[i + 1]!);
    return out;
}

export function spawnDaemon(o: DaemonOptions): DaemonProcess {
    const argv = [process.execPath, MAIN, o.command ?? "run", ...baseArgs(o), ...(o.args ?? [])];
    const [command, ...rest] = [...(o.prefix ?? []), ...argv];
    const child = spawn(command!, rest, {
        stdio: ["ignore", "pipe", "pipe"],
        env: {...process.env, ...o.env}
    });
    return wrap(child);
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): DaemonProcess {
    const child = spawn(process.execPath, [MAIN, ...args], {stdio: ["ignore", "pipe", "pipe"], env: {...process.env, ...env}});
    return wrap(child);
}

function wrap(child: ChildProcess): DaemonProcess {
    const logs: Array<Record<string, unknown>> = [];
    let out = "";
    let err = "";
    let partial = "";
    const waiters = new Set<() => void>();
    child.stdout?.on("data", (d: Buffer) => {
        out += d.toString();
        partial += d.toString();
        const lines = partial.split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) {
            try {
                logs.push(JSON.parse(line) as Record<string, unknown>);
            } catch {
                // not a log line (e.g. CLI output)
            }
        }
        for (const w of waiters) w();
    });
    child.stderr?.on("data", (d: Buffer) => { err += d.toString(); });
    const exited = new Promise<{code: number | null; signal: NodeJS.Signals | null}>((resolve) => {
        child.once("exit", (code, signal) => {
            for (const w of waiters) w();
            resolve({code, signal});
        });
    });
    const waitForLog = (what: string, match: (l: Record<string, unknown>) => boolean, timeoutMs = 30_000): Promise<Record<string, unknown>> =>
        new Promise((resolve, reject) => {
            const check = (): void => {
                const found = logs.find(match);
                if (found) {
                    clearTimeout(timer);
                    waiters.delete(check);
                    resolve(found);
                } else if (child.exitCode !== null || child.signalCode !== null) {
                    clearTimeout(timer);
                    waiters.delete(check);
                    reject(new Error(`daemon exited (${child.exitCode ?? child.signalCode}) before log "${what}"; stderr: ${err.slice(-1000)}; stdout: ${out.slice(-1500)}`));
                }
            };
            const timer = setTimeout(() => {
                waiters.delete(check);
                reject(new Error(`timed out after ${timeoutMs} ms waiting for log "${what}"; stdout tail: ${out.slice(-1500)}; stderr: ${err.slice(-500)}`));
            }, timeoutMs);
            waiters.add(check);
            check();
        });
    const signalAndWait = async (signal: NodeJS.Signals): Promise<{code: number | null; signal: NodeJS.Signals | null}> => {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        return exited;
    };
    return {child, logs, stdout: () => out, stderr: () => err, exited, waitForLog,
        term: () => signalAndWait("SIGTERM"), kill: () => signalAndWait("SIGKILL")};
}

export async function tempDir(prefix: string): Promise<{path: string; dispose: () => Promise<void>}> {
    const path = await mkdtemp(join(tmpdir(), prefix));
    return {path, dispose: () => rm(path, {recursive: true, force: true})};
}
