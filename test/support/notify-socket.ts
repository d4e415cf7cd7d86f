/**
 * A stand-in for systemd's notify socket: an AF_UNIX datagram socket (Node cannot bind one, so a
 * python3 child does) that records every datagram. Like PID 1 it drops the file descriptors a
 * BARRIER=1 message carries (recv() without ancillary space closes them), which is what lets
 * `systemd-notify` return instead of waiting 5 s for its barrier.
 */
import {spawn, type ChildProcess} from "node:child_process";
import {existsSync} from "node:fs";
import {mkdtemp, rm} from "node:fs/promises";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {withTimeout} from "../../src/util/timeout.js";

const RECEIVER = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1].replace("@", "\\0", 1) if sys.argv[1].startswith("@") else sys.argv[1])
print(json.dumps({"bound": True}), flush=True)
while True:
    data = s.recv(65536)
    print(json.dumps({"datagram": data.decode("utf-8", "replace")}), flush=True)
`;

export interface Notification {
    /** the datagram's KEY=VALUE lines as an object */
    fields: Record<string, string>;
    at: number;
}

export interface NotifySocket {
    /** the NOTIFY_SOCKET value: a path, or "@name" for the abstract namespace */
    address: string;
    received: Notification[];
    waitFor(what: string, match: (n: Notification) => boolean, timeoutMs?: number): Promise<Notification>;
    dispose(): Promise<void>;
}

export function python3(): string {
    return existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

export async function startNotifySocket(options: {abstract?: boolean} = {}): Promise<NotifySocket> {
    const dir = await mkdtemp(join(tmpdir(), "qe-notify-"));
    const address = options.abstract ? `@qe-notify-${process.pid}-${Math.random().toString(16).slice(2)}` : join(dir, "notify.sock");
    const child: ChildProcess = spawn(python3(), ["-u", "-c", RECEIVER, address], {stdio: ["ignore", "pipe", "pipe"]});
    const received: Notification[] = [];
    const waiters = new Set<() => void>();
    let partial = "";
    let stderr = "";
    let bound: () => void = () => undefined;
    const isBound = new Promise<void>((resolve) => {
        bound = resolve;
    });
    child.stderr?.on("data", (d: Buffer) => {
        stderr += d.toString();
    });
    child.stdout?.on("data", (d: Buffer) => {
        partial += d.toString();
        const lines = partial.split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) {
            const msg = JSON.parse(line) as {bound?: boolean; datagram?: string};
            if (msg.bound) bound();
            if (msg.datagram === undefined) continue;
            const fields: Record<string, string> = {};
            for (const field of msg.datagram.split("\n")) {
                const eq = field.indexOf("=");
                if (eq > 0) fields[field.slice(0, eq)] = field.slice(eq + 1);
            }
            received.push({fields, at: Date.now()});
        }
        for (const w of waiters) w();
    });
    await withTimeout(isBound, 10_000, () => {
        throw new Error(`notify socket receiver did not start: ${stderr}`);
    });
    return {
        address, received,
        waitFor: (what, match, timeoutMs = 20_000) => new Promise((resolve, reject) => {
            const check = (): void => {
                const found = received.find(match);
                if (!found) return;
                clearTimeout(timer);
                waiters.delete(check);
                resolve(found);
            };
            const timer = setTimeout(() => {
                waiters.delete(check);
                reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; got ${JSON.stringify(received.map((n) => n.fields))}`));
            }, timeoutMs);
            waiters.add(check);
            check();
        }),
        dispose: async () => {
            if (child.exitCode === null && child.signalCode === null) {
                const exited = new Promise((resolve) => child.once("exit", resolve));
                child.kill("SIGKILL");
                await exited;
            }
            await rm(dir, {recursive: true, force: true});
        }
    };
}
