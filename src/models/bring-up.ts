/**
 * Bringing the model up at daemon start: the configured file (model.path), or plan -> provision ->
 * load, falling back to the next smaller candidate that fits when provisioning or loading fails
 * (out of memory, no disk space, a download that cannot be had). Every step is reported through
 * `onPhase` so the retained status shows it.
 */
import {basename} from "node:path";
import type {ModelConfig} from "../config-schema.js";
import {describeError, ModelUnavailableError, NoModelFitsError} from "../errors.js";
import type {Engine} from "../inference/engine.js";
import type {Logger} from "../log.js";
import {modelName} from "./catalog.js";
import type {ModelPlan} from "./planner.js";
import {collectGarbage} from "../system/gc.js";
import {checkGgufFile, type ProvisionProgress} from "./provision.js";
import {fallbackOrder, logPlan, planForDevice, provisionCandidate, type PlanConfig, type ProvisionConfig} from "./select.js";

/** What bring-up reads from the configuration: model.path, and what planning and provisioning read. */
export type BringUpConfig = PlanConfig & ProvisionConfig & {model: Pick<ModelConfig, "path">};

export interface BringUpDeps {
    config: BringUpConfig;
    log: Logger;
    engine: Pick<Engine, "load" | "runtime">;
    onPhase: (phase: "planning" | "provisioning" | "loading", progress: Record<string, unknown>) => void;
}

export interface LoadedModel {
    name: string;
    path: string;
    plan: ModelPlan | null;
    /** why a smaller model than planned runs, when it does */
    fallback: string | null;
}

export async function bringUpModel(deps: BringUpDeps): Promise<LoadedModel> {
    const {config, log, engine} = deps;
    if (config.model.path !== "") {
        const name = basename(config.model.path).replace(/\.gguf$/i, "");
        log.info("model chosen", {model: name, reason: `given by model.path (${config.model.path})`});
        deps.onPhase("loading", {phase: "loading", model: name});
        // Structure first (header and length, no hash): node-llama-cpp's loader given a corrupt header can
        // spin and grow without bound instead of failing (measured: flipped tensor dims, 390 MB after 11 s).
        await checkGgufFile(config.model.path);
        await engine.load(config.model.path);
        return {name, path: config.model.path, plan: null, fallback: null};
    }
    deps.onPhase("planning", {phase: "planning"});
    const runtime = engine.runtime;
    const {plan} = await planForDevice(config, runtime ? {llama: runtime} : {});
    logPlan(log, plan);
    collectGarbage();
    const order = fallbackOrder(plan);
    if (order.length === 0) throw new NoModelFitsError(plan.reason);
    log.info("model chosen", {model: modelName(order[0]!.variant, order[0]!.quant), reason: plan.reason});
    const failures: Array<{name: string; message: string}> = [];
    for (const candidate of order) {
        const name = modelName(candidate.variant, candidate.quant);
        try {
            const provisioned = await provisionCandidate(config, candidate, {log,
                onProgress: (p: ProvisionProgress) => deps.onPhase("provisioning", {phase: p.phase, model: name,
                    downloadedBytes: p.downloadedBytes, totalBytes: p.totalBytes,
                    ...(p.totalBytes ? {percent: Math.floor((p.downloadedBytes / p.totalBytes) * 1000) / 10} : {}),
                    ...(p.bytesPerSecond !== undefined ? {bytesPerSecond: Math.round(p.bytesPerSecond)} : {})})});
            deps.onPhase("loading", {phase: "loading", model: name});
            // Context creation past the budget throws instead of pushing the device into the OOM killer.
            await engine.load(provisioned.path, plan.budgetBytes);
            const fallback = failures.length > 0 ? `running ${name} instead of ${failures.map((f) => `${f.name}: ${f.message}`).join("; ")}` : null;
            if (fallback) log.warn("model fallback", {model: name, reason: fallback});
            return {name, path: provisioned.path, plan, fallback};
        } catch (err) {
            const d = describeError(err);
            failures.push({name, message: d.message});
            log.warn("model candidate failed", {model: name, ...d});
        }
    }
    // The status and error replies carry this as one short line (shortReason): the count, then the first failure.
    const first = failures[0]!;
    throw new ModelUnavailableError(failures.length === 1 ? first.message : `${failures.length} candidates failed; the first: ${first.message}`);
}
