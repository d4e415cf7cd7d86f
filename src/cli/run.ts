/** `qwen-edge run`: the daemon, until SIGTERM or SIGINT. */
import {loadConfig, redactedConfig} from "../config.js";
import {Daemon} from "../daemon.js";
import {SdNotifier} from "../system/sdnotify.js";
import {defaultThreads, probeCpuFacts} from "../system/probe.js";
import type {StatusMessage} from "../telemetry/status.js";
import {ConfigError, describeError} from "../errors.js";
import {createLogger} from "../log.js";
import {packageVersion} from "../version.js";
import {isDownloaderStray} from "../models/downloader-quirks.js";
import {checkConfiguredModelPath} from "../models/gguf-check.js";
import {splitArgs} from "./args.js";
import {EXIT} from "./exit.js";
import {startupLines} from "./startup-lines.js";

export async function runCommand(args: string[]): Promise<number> {
    const {positional, config: configArgs} = splitArgs(args);
    if (positional.length > 0) throw new ConfigError(`run takes no positional arguments (got "${positional[0]}")`);
    const config = loadConfig({args: configArgs});
    // Before anything starts: a wrong model.path exits 2, which the unit file does not restart.
    if (config.model.path !== "") await checkConfiguredModelPath(config.model.path);
    const log = createLogger(config.log.level, process.stdout, config.log.format);
    // Default: every CPU available, up to the physical cores. With libuv's pool at one thread (the
    // launcher) that is the fastest measured at every model size >= 70 MB (docs/ENGINE-SPEED.md).
    const cpu = await probeCpuFacts();
    const threads = config.inference.threads > 0 ? config.inference.threads : defaultThreads(cpu);
    log.info("qwen-edge starting", {version: packageVersion(), pid: process.pid, device: config.device.id, threads,
        threadsFrom: config.inference.threads > 0 ? "inference.threads"
            : `default: ${cpu.available} CPUs available, ${cpu.physicalCores ?? "?"} physical cores`});
    for (const line of startupLines(config)) log.info(line.message, line.fields);
    log.debug("configuration", {config: redactedConfig(config)});

    // systemd: READY=1 once online (or degraded), WATCHDOG=1 while healthy, STOPPING=1, STATUS= lines.
    const systemdStatus = new SystemdStatus((text) => notifier.status(text));
    const daemon = new Daemon({config, log, threads,
        onReady: () => notifier.ready(systemdStatus.text()),
        onStatus: (status) => systemdStatus.setState(status),
        onBroker: (connected, problem) => systemdStatus.setBroker(connected, problem)});
    const notifier = new SdNotifier({log, check: () => daemon.health()});
    notifier.start();
    let signals = 0;
    const stopped = new Promise<number>((resolve) => {
        const onSignal = (signal: NodeJS.Signals): void => {
            signals++;
            if (signals > 1) {
                log.warn("second signal: exiting now", {signal});
                process.exit(EXIT.failure);
            }
            log.info("signal received", {signal});
            notifier.stopping(`stopping (${signal}): finishing running requests for up to ${config.shutdown.drainMs / 1000} s`);
            // A stuck shutdown must not hang the unit: systemd would SIGKILL us anyway, later.
            setTimeout(() => {
                log.error("shutdown took too long; exiting");
                process.exit(EXIT.failure);
            }, config.shutdown.drainMs + 15_000).unref();
            daemon.stop().then(() => EXIT.ok, (err: unknown) => {
                log.error("shutdown failed", describeError(err));
                return EXIT.failure;
            }).then(async (code) => {
                await notifier.stop();
                resolve(code);
            }, () => resolve(EXIT.failure));
        };
        process.on("SIGTERM", onSignal);
        process.on("SIGINT", onSignal);
    });
    process.on("uncaughtException", (err) => {
        log.error("uncaught exception; exiting so the service manager restarts us", describeError(err));
        process.exit(EXIT.failure);
    });
    process.on("unhandledRejection", (err) => {
        if (isDownloaderStray(err)) return; // node-llama-cpp's downloader leaves these behind; provision.ts handles the failure
        log.error("unhandled rejection; exiting so the service manager restarts us", describeError(err));
        process.exit(EXIT.failure);
    });
    await daemon.start();
    return stopped;
}

/** The one-line STATUS= for `systemctl status`: the device state, then the broker connection. */
class SystemdStatus {
    private state = "starting";
    private broker = "connecting to the broker";

    public constructor(private readonly send: (text: string) => void) {}

    public text(): string {
        return `${this.state}; ${this.broker}`;
    }

    public setState(status: StatusMessage): void {
        const model = typeof status.progress?.model === "string" ? ` ${status.progress.model}` : "";
        this.state = status.state === "loading" ? `loading model${model}`
            : status.reason !== undefined ? `${status.state}: ${status.reason}` : status.state;
        this.send(this.text());
    }

    public setBroker(connected: boolean, problem?: string): void {
        this.broker = connected ? "broker connected" : `broker: ${problem ?? "connection lost"}; retrying`;
        this.send(this.text());
    }
}
