/**
 * A real Mosquitto per test file, on a free port, with its own config and data directory, so tests
 * can stop, kill and restart it. The binary is Debian's `mosquitto` (.ci/run installs it).
 */
import {spawn, type ChildProcess} from "node:child_process";
import {existsSync} from "node:fs";
import {mkdtemp, rm, writeFile} from "node:fs/promises";
import {createServer} from "node:net";
import {tmpdir, userInfo} from "node:os";
import {join} from "node:path";

export interface Broker {
    port: number;
    url: string;
    dir: string;
    /** everything mosquitto printed, for failure messages */
    output(): string;
    stop(): Promise<void>;
    kill(): Promise<void>;
    /** starts it again on the same port with the same persistence file */
    restart(): Promise<void>;
    dispose(): Promise<void>;
}

export interface BrokerOptions {
    /** extra mosquitto.conf lines */
    extraConfig?: string[];
    persistence?: boolean;
    /** listen on this port (e.g. one a daemon is already retrying); default a free one */
    port?: number;
}

export async function freePort(): Promise<number> {
    return new Promise((resolve, reject) => {
        const server = createServer();
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => {
            const address = server.address();
            const port = typeof address === "object" && address ? address.port : 0;
            server.close(() => resolve(port));
        });
    });
}

export async function startBroker(options: BrokerOptions = {}): Promise<Broker> {
    const dir = await mkdtemp(join(tmpdir(), "qe-broker-"));
    const port = options.port ?? await freePort();
    const conf = [
        `listener ${port} 127.0.0.1`,
        "allow_anonymous true",
        // Without it a request right after a reply waits ~40 ms for Nagle/delayed ACK (docs/DESIGN.md).
        "set_tcp_nodelay true",
        `persistence ${options.persistence === false ? "false" : "true"}`,
        `persistence_location ${dir}/`,
        // As root mosquitto drops to the mosquitto user, which could not write our temp dir.
        `user ${userInfo().username}`,
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        ...(options.extraConfig ?? [])
    ];
    await writeFile(join(dir, "mosquitto.conf"), conf.join("\n") + "\n");
    let child: ChildProcess | null = null;
    let output = "";
    const launch = async (): Promise<void> => {
        const proc = spawn(mosquittoBinary(), ["-c", join(dir, "mosquitto.conf")], {stdio: ["ignore", "pipe", "pipe"]});
        child = proc;
        proc.stdout.on("data", (d: Buffer) => { output += d.toString(); });
        proc.stderr.on("data", (d: Buffer) => { output += d.toString(); });
        await waitForPort(port, 5000, () => output);
    };
    const waitExit = async (signal: NodeJS.Signals): Promise<void> => {
        const proc = child;
        if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
        const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
        proc.kill(signal);
        await exited;
    };
    await launch();
    return {
        port, url: `mqtt://127.0.0.1:${port}`, dir,
        output: () => output,
        stop: () => waitExit("SIGTERM"),
        kill: () => waitExit("SIGKILL"),
        restart: async () => {
            await waitExit("SIGTERM");
            await launch();
        },
        dispose: async () => {
            await waitExit("SIGKILL");
            await rm(dir, {recursive: true, force: true});
        }
    };
}

/** Debian puts mosquitto in /usr/sbin, which is not on every user's PATH. */
function mosquittoBinary(): string {
    for (const candidate of ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"])
        if (existsSync(candidate)) return candidate;
    return "mosquitto";
}

async function waitForPort(port: number, timeoutMs: number, output: () => string): Promise<void> {
    const { connect } = await import("node:net");
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
        const ok = await new Promise<boolean>((resolve) => {
            const socket = connect(port, "127.0.0.1");
            socket.once("connect", () => { socket.destroy(); resolve(true); });
            socket.once("error", () => resolve(false));
        });
        if (ok) return;
        await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`mosquitto did not listen on ${port} within ${timeoutMs} ms: ${output()}`);
}
