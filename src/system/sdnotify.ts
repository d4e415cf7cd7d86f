/**
 * sd_notify(3) for Type=notify units, without a native module.
 *
 * The protocol is one AF_UNIX datagram per message to $NOTIFY_SOCKET. Node's core has no unix
 * datagram sockets (dgram is UDP only; net is stream only and a stream socket cannot connect to a
 * datagram one), so the datagrams are sent by `systemd-notify`, which ships with systemd itself
 * and so exists wherever NOTIFY_SOCKET is set. Options weighed (measured on Debian 12, systemd 252):
 * - a native addon (or ffi): a compiler or prebuilt binaries per arch, for a 30-byte message;
 * - a long-lived python3/socat helper fed on stdin: no per-message process, but a runtime
 *   dependency Debian minimal images lack;
 * - `systemd-notify` per message (chosen): 20-50 ms of a child process per message, a few messages
 *   at start and stop and one WATCHDOG=1 per WatchdogSec/2 (every minute with the shipped unit).
 * Because the sender is a child, not the main PID, the unit needs NotifyAccess=all. systemd 252's
 * systemd-notify waits (BARRIER=1) until PID 1 has processed the message, so the message is never
 * dropped for coming from an already-exited process (the race its man page describes for
 * --no-block). Messages are sent one invocation at a time, in order; ones queued meanwhile are
 * merged into the next datagram (a newer STATUS= replaces an older one).
 */
import {spawn} from "node:child_process";
import type {Logger} from "../log.js";
import {withTimeout} from "../util/timeout.js";

export interface HealthVerdict {
    ok: boolean;
    /** why not, when not ok: logged and put in STATUS= */
    reason?: string;
}

export interface SdNotifierDeps {
    log: Logger;
    /** default process.env: NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID are read from it */
    env?: NodeJS.ProcessEnv;
    /** liveness beyond "the event loop runs"; a failing verdict withholds WATCHDOG=1 (default: always ok) */
    check?: () => HealthVerdict;
    /** the sender program (default "systemd-notify"; tests may point elsewhere) */
    command?: string;
    /** one invocation may take this long before it is killed (default 10 s; systemd-notify's barrier waits 5 s) */
    sendTimeoutMs?: number;
}

export class SdNotifier {
    private readonly deps: SdNotifierDeps;
    private enabled = false;
    private watchdogMs = 0;
    private timer: NodeJS.Timeout | null = null;
    private lastTick = 0;
    private readonly pending = new Map<string, string>();
    private sending: Promise<void> | null = null;
    private lastStatus = "";
    private lastFailure = "";
    private withheld = false;

    public constructor(deps: SdNotifierDeps) {
        this.deps = deps;
    }

    /** Reads the environment; without NOTIFY_SOCKET every call is a no-op. */
    public start(): void {
        const env = this.deps.env ?? process.env;
        this.enabled = (env.NOTIFY_SOCKET ?? "") !== "";
        if (!this.enabled) return;
        this.watchdogMs = watchdogIntervalMs(env, process.pid);
        this.deps.log.debug("sd_notify enabled", {socket: env.NOTIFY_SOCKET, watchdogPingMs: this.watchdogMs || null});
    }

    public get active(): boolean {
        return this.enabled;
    }

    /** READY=1, then WATCHDOG=1 pings: the watchdog guards the running service, TimeoutStartSec the start. */
    public ready(status?: string): void {
        if (!this.enabled) return;
        this.queue({READY: "1", ...(status !== undefined && status !== this.lastStatus ? this.statusField(status) : {})});
        if (this.watchdogMs > 0 && !this.timer) {
            this.lastTick = Date.now();
            this.timer = setInterval(() => this.tick(), this.watchdogMs);
            this.timer.unref();
        }
    }

    /** STATUS=… for `systemctl status`; repeated identical texts are not resent. */
    public status(text: string): void {
        if (!this.enabled || text === this.lastStatus) return;
        this.queue(this.statusField(text));
    }

    /** STOPPING=1: stops the watchdog pings (a long drain must not look like a hang to systemd). */
    public stopping(status?: string): void {
        if (!this.enabled) return;
        this.clearTimer();
        this.queue({STOPPING: "1", ...(status !== undefined ? this.statusField(status) : {})});
    }

    /** Waits (bounded) until every queued message is sent, so STOPPING=1 leaves before we exit. */
    public async stop(timeoutMs = 12_000): Promise<void> {
        this.clearTimer();
        const deadline = Date.now() + timeoutMs;
        while (this.sending && Date.now() < deadline) {
            await withTimeout(this.sending, Math.max(0, deadline - Date.now()), () => undefined);
        }
    }

    private tick(): void {
        const now = Date.now();
        // The interval firing at all proves the event loop runs; a late tick says it was blocked.
        const lateMs = now - this.lastTick - this.watchdogMs;
        this.lastTick = now;
        if (lateMs > this.watchdogMs / 2) this.deps.log.warn("event loop was blocked", {lateMs, watchdogPingMs: this.watchdogMs});
        const verdict = this.deps.check?.() ?? {ok: true};
        if (!verdict.ok) {
            // No ping: systemd's watchdog expires, it kills us (SIGABRT) and Restart= starts us again.
            if (!this.withheld) this.deps.log.error("unhealthy: withholding the watchdog ping so systemd restarts the service", {reason: verdict.reason});
            this.withheld = true;
            this.status(`unhealthy: ${verdict.reason ?? "health check failed"}`);
            return;
        }
        if (this.withheld) this.deps.log.info("healthy again: watchdog pings resumed");
        this.withheld = false;
        this.queue({WATCHDOG: "1"});
    }

    private statusField(text: string): Record<string, string> {
        this.lastStatus = text;
        // One datagram line per field: a newline inside STATUS= would start a bogus field.
        return {STATUS: text.replace(/[\r\n]+/g, " ").slice(0, 400)};
    }

    private queue(fields: Record<string, string>): void {
        for (const [key, value] of Object.entries(fields)) this.pending.set(key, value);
        this.sending ??= this.drain();
    }

    private async drain(): Promise<void> {
        while (this.pending.size > 0 && this.enabled) {
            const args = [...this.pending].map(([key, value]) => `${key}=${value}`);
            this.pending.clear();
            await this.send(args);
        }
        this.sending = null;
    }

    private send(args: string[]): Promise<void> {
        const {log} = this.deps;
        const command = this.deps.command ?? "systemd-notify";
        return new Promise((resolve) => {
            let stderr = "";
            const child = spawn(command, args, {stdio: ["ignore", "ignore", "pipe"], env: this.deps.env ?? process.env});
            const timer = setTimeout(() => child.kill("SIGKILL"), this.deps.sendTimeoutMs ?? 10_000);
            child.stderr.on("data", (d: Buffer) => {
                stderr += d.toString();
            });
            child.once("error", (err: Error & {code?: string}) => {
                clearTimeout(timer);
                if (err.code === "ENOENT") {
                    // Nothing else can send the datagram: give up instead of failing every minute.
                    log.error("NOTIFY_SOCKET is set but systemd-notify is missing; not notifying systemd (a Type=notify unit will time out)",
                        {command});
                    this.enabled = false;
                    this.clearTimer();
                } else this.noteFailure(`${command}: ${err.message}`, args);
                resolve();
            });
            child.once("exit", (code, signal) => {
                clearTimeout(timer);
                if (code === 0) {
                    this.lastFailure = "";
                    log.debug("sd_notify sent", {fields: args.map((a) => a.slice(0, a.indexOf("=")))});
                } else this.noteFailure(`${command} exited ${code ?? signal}: ${stderr.trim().slice(0, 300)}`, args);
                resolve();
            });
        });
    }

    /** One warning per distinct failure: a missing socket must not log every minute. */
    private noteFailure(problem: string, args: string[]): void {
        if (problem === this.lastFailure) return;
        this.lastFailure = problem;
        this.deps.log.warn("sd_notify failed", {problem, fields: args.map((a) => a.slice(0, a.indexOf("=")))});
    }

    private clearTimer(): void {
        if (this.timer) clearInterval(this.timer);
        this.timer = null;
    }
}

/**
 * sd_watchdog_enabled(3): WATCHDOG_USEC applies to us unless WATCHDOG_PID names another process.
 * Returns the ping interval (half the timeout, as the man page recommends), or 0 for no watchdog.
 */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv, pid: number): number {
    const usec = Number(env.WATCHDOG_USEC ?? "");
    if (!Number.isFinite(usec) || usec <= 0) return 0;
    const forPid = env.WATCHDOG_PID;
    if (forPid !== undefined && forPid !== "" && Number(forPid) !== pid) return 0;
    return Math.max(1, Math.floor(usec / 2000));
}
