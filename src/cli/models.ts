/** `qwen-edge plan` and `qwen-edge pull`: the model choice, explained, and provisioning ahead of time. */
import {loadConfig} from "../config.js";
import {ConfigError, NoModelFitsError} from "../errors.js";
import {createLogger, silentLogger} from "../log.js";
import {disposeEstimateLlama} from "../models/estimate.js";
import {renderPlan} from "../models/planner.js";
import {formatBytes, parseSize} from "../util/size.js";
import {keptDownloadBytes, type ProvisionProgress} from "../models/provision.js";
import {ProgressBar} from "../models/progress-bar.js";
import {fallbackOrder, parseVariantFlag, planForDevice, provisionCandidate} from "../models/select.js";
import {modelFileName, modelName} from "../models/catalog.js";
import {splitArgs} from "./args.js";
import {EXIT} from "./exit.js";

export async function planCommand(args: string[]): Promise<number> {
    const {flags, positional, config: configArgs} = splitArgs(args, {values: ["memory"], booleans: ["json"]});
    if (positional.length > 0) throw new ConfigError(`plan takes no positional arguments (got "${positional[0]}")`);
    const config = loadConfig({args: configArgs});
    const memoryBytes = typeof flags.memory === "string" ? parseSize(flags.memory) : undefined;
    try {
        const {plan} = await planForDevice(config, memoryBytes !== undefined ? {memoryBytes} : {});
        if (flags.json === true) process.stdout.write(JSON.stringify(plan, null, 2) + "\n");
        else process.stdout.write(renderPlan(plan) + "\n");
        if (!plan.choice) {
            if (flags.json !== true) process.stderr.write(`${plan.reason}\n`);
            return EXIT.noModelFits;
        }
        return EXIT.ok;
    } finally {
        await disposeEstimateLlama();
    }
}

export async function pullCommand(args: string[]): Promise<number> {
    const {flags, positional, config: configArgs} = splitArgs(args, {values: ["variant", "memory"], booleans: ["verbose"]});
    if (positional.length > 0) throw new ConfigError(`pull takes no positional arguments (got "${positional[0]}")`);
    const config = loadConfig({args: configArgs});
    let variant;
    try {
        variant = typeof flags.variant === "string" ? parseVariantFlag(flags.variant) : undefined;
    } catch (err) {
        throw new ConfigError((err as Error).message);
    }
    // The command's own output only; the daemon's log lines with --verbose (on stderr).
    const log = flags.verbose === true ? createLogger("debug", process.stderr, config.log.format) : silentLogger();
    const controller = new AbortController();
    let bar: ProgressBar | null = null;
    let progress: ProvisionProgress | null = null;
    let fileName: string | null = null;
    let said: Promise<void> | null = null;
    // What the downloader saved is what the next pull resumes from (it writes in 5 MiB pieces).
    const sayInterrupted = (): Promise<void> => said ??= (async () => {
        bar?.finish();
        if (progress?.phase !== "downloading" || fileName === null) {
            process.stderr.write("interrupted\n");
            return;
        }
        const kept = await keptDownloadBytes(config.model.dir, fileName);
        const total = progress.totalBytes !== null ? ` of ${formatBytes(progress.totalBytes)}` : "";
        process.stderr.write(kept > 0 ? `interrupted; the download resumes next time (${formatBytes(kept)}${total} kept in ${config.model.dir})\n`
            : "interrupted; nothing was kept yet: the download starts over next time\n");
    })();
    process.once("SIGINT", () => {
        controller.abort();
        // node-llama-cpp's downloader can keep the process alive for seconds after an abort.
        setTimeout(() => void sayInterrupted().then(() => process.exit(EXIT.interrupted)), 3000).unref();
    });
    try {
        const memoryBytes = typeof flags.memory === "string" ? parseSize(flags.memory) : undefined;
        const {plan} = await planForDevice(config, {...(variant ? {variant} : {}), ...(memoryBytes !== undefined ? {memoryBytes} : {}), signal: controller.signal});
        const candidate = fallbackOrder(plan)[0];
        if (!candidate) throw new NoModelFitsError(plan.reason);
        const label = modelName(candidate.variant, candidate.quant);
        fileName = modelFileName(candidate.variant, candidate.quant, {repository: config.model.repository});
        process.stdout.write(`${plan.reason}\n`);
        const shown = new ProgressBar({stream: process.stdout, label});
        bar = shown;
        const model = await provisionCandidate(config, candidate, {log, signal: controller.signal, onProgress: (p) => {
            progress = p;
            shown.update(p);
        }});
        shown.finish(`${label}: ${model.path} (${model.source === "local" ? "already here" : "downloaded"}${model.verified ? ", sha256 verified" : ""})`);
        return EXIT.ok;
    } catch (err) {
        if (!controller.signal.aborted) throw err;
        await sayInterrupted();
        return EXIT.interrupted;
    } finally {
        await disposeEstimateLlama();
    }
}
