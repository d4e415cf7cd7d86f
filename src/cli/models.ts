/** `qwen-edge plan` and `qwen-edge pull`: the model choice, explained, and provisioning ahead of time. */
import {loadConfig} from "../config.js";
import {ConfigError, NoModelFitsError} from "../errors.js";
import {createLogger} from "../log.js";
import {disposeEstimateLlama} from "../models/estimate.js";
import {parseSize, renderPlan} from "../models/planner.js";
import {ProgressBar} from "../models/progress-bar.js";
import {fallbackOrder, parseVariantFlag, planForDevice, provisionCandidate} from "../models/select.js";
import {modelName} from "../models/catalog.js";
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
    const {flags, positional, config: configArgs} = splitArgs(args, {values: ["variant", "memory"]});
    if (positional.length > 0) throw new ConfigError(`pull takes no positional arguments (got "${positional[0]}")`);
    const config = loadConfig({args: configArgs});
    let variant;
    try {
        variant = typeof flags.variant === "string" ? parseVariantFlag(flags.variant) : undefined;
    } catch (err) {
        throw new ConfigError((err as Error).message);
    }
    // Progress goes to the terminal; the log (stderr) says only what went wrong.
    const log = createLogger("warn", process.stderr);
    const controller = new AbortController();
    process.once("SIGINT", () => {
        controller.abort();
        // node-llama-cpp's downloader can keep the process alive for seconds after an abort.
        setTimeout(() => process.exit(130), 1000).unref();
    });
    try {
        const memoryBytes = typeof flags.memory === "string" ? parseSize(flags.memory) : undefined;
        const {plan} = await planForDevice(config, {...(variant ? {variant} : {}), ...(memoryBytes !== undefined ? {memoryBytes} : {}), signal: controller.signal});
        const candidate = fallbackOrder(plan)[0];
        if (!candidate) throw new NoModelFitsError(plan.reason);
        const label = modelName(candidate.variant, candidate.quant);
        process.stdout.write(`${plan.reason}\n`);
        const bar = new ProgressBar({stream: process.stdout, label});
        const model = await provisionCandidate(config, candidate, {log, onProgress: (p) => bar.update(p), signal: controller.signal});
        bar.finish(`${label}: ${model.path} (${model.source === "local" ? "already here" : "downloaded"}${model.verified ? ", sha256 verified" : ""})`);
        return EXIT.ok;
    } finally {
        await disposeEstimateLlama();
    }
}
