/**
 * The daemon's typed event bus: parts announce what happened (a generation finished, an error was
 * answered, the model changed state, a route counted something) and other parts listen, so telemetry
 * needs no getters into whoever produced the figures. Listeners register with an owner and are removed
 * by owner when that part stops; a listener that throws is logged with its owner's name and never
 * breaks the emitter.
 */
import type {WireErrorCode} from "./errors.js";
import type {Logger} from "./log.js";
import type {ModelPlan} from "./models/planner.js";
import type {RouteCounters} from "./routes/router.js";

/** One finished generation, as the reply reported it. */
export interface GenerationDone {
    id: string;
    promptTokens: number;
    /** every generated token (thoughts, answer, end token) */
    completionTokens: number;
    thinkingTokens: number;
    /** prompt tokens taken from an evaluated prefix instead of evaluated again */
    cachedPromptTokens: number;
    /** prompt evaluation through the first token; null when no token came */
    ttftMs: number | null;
    /** generation time, prompt evaluation included */
    totalMs: number;
}

export type ModelState = "loading" | "ready" | "failed";

export interface ModelStateChange {
    state: ModelState;
    /** "Qwen3.5-2B-Q4_K_M", or the file's name with model.path; "" before one is chosen */
    name: string;
    path: string;
    /** the planner's decision, when the model was chosen by memory */
    plan: ModelPlan | null;
    /** why it failed, or why a smaller model than planned runs */
    reason: string | null;
}

export interface DaemonEvents {
    generationDone: GenerationDone;
    /** an error reply went out (or would have: text routes publish none) */
    requestError: {id: string | null; code: WireErrorCode};
    modelState: ModelStateChange;
    /** a route's counters changed */
    routeOutcome: {route: string; counters: RouteCounters};
    /** the job journal stopped taking records (reason), or takes them again (null) */
    storage: {reason: string | null};
    /** a final reply the broker would not take, given up after retries (the job left the journal) */
    replyDropped: {id: string; topic: string; reason: string};
}

type Listener<K extends keyof DaemonEvents> = (event: DaemonEvents[K]) => void;

export class EventBus {
    private readonly listeners = new Map<keyof DaemonEvents, Array<{owner: string; listener: Listener<never>}>>();

    public constructor(private readonly log: Pick<Logger, "error">) {}

    public on<K extends keyof DaemonEvents>(owner: string, name: K, listener: Listener<K>): void {
        const list = this.listeners.get(name) ?? [];
        list.push({owner, listener: listener});
        this.listeners.set(name, list);
    }

    /** Removes every listener `owner` registered (a part calls it when it stops). */
    public off(owner: string): void {
        for (const [name, list] of this.listeners) this.listeners.set(name, list.filter((l) => l.owner !== owner));
    }

    public emit<K extends keyof DaemonEvents>(name: K, event: DaemonEvents[K]): void {
        for (const {owner, listener} of this.listeners.get(name) ?? []) {
            try {
                (listener as Listener<K>)(event);
            } catch (err) {
                this.log.error("event listener failed", {owner, event: name, error: (err as Error).message});
            }
        }
    }
}
