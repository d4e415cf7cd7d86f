/**
 * Runs the model's calls to device actions (issue 20, docs/ACTIONS.md), safe by construction:
 * - only actions the request (or its route) granted by name are offered to the model, and a call to anything
 *   else is refused and reported, never published;
 * - every argument is validated against the action's schema before anything is published;
 * - the topic is the action's template with each argument confined to its level, then checked against the
 *   reply policy (the device's own topics, Home Assistant's, other devices' requests, route inputs);
 * - identical calls in one request run once; at most MAX_CALLS_PER_REQUEST calls a request; each action has
 *   a rate limit (maxPerMinute, all requests together);
 * - every outcome is logged with the action, the topic and the request id, never the arguments' values.
 */
import type {IClientPublishOptions} from "mqtt";
import type {Logger} from "../log.js";
import type {ToolDefinition} from "../inference/generation.js";
import {replyPolicyRefusal, type ReplyPolicy} from "../mqtt/reply-policy.js";
import {describeError} from "../errors.js";
import {renderAction, type Action} from "./action.js";
import {validateAgainstSchema} from "./schema.js";

/** Calls to actions one request may make (identical calls count once). */
export const MAX_CALLS_PER_REQUEST = 4;

export type ActionStatus = "published" | "refused" | "invalid";

export interface ActionRecord {
    name: string;
    arguments: unknown;
    topic?: string;
    status: ActionStatus;
    reason?: string;
}

export interface ActionExecutorDeps {
    log: Logger;
    actions: readonly Action[];
    device: string;
    /** where the daemon may publish (src/mqtt/reply-policy.ts); null: only the topic checks */
    policy: ReplyPolicy | null;
    publish(topic: string, payload: string, options: IClientPublishOptions): Promise<void>;
    now?: () => number;
}

export interface ActionStats {
    published: number;
    refused: number;
    invalid: number;
}

export class ActionExecutor {
    private readonly byName: Map<string, Action>;
    /** per action: the times of its recent publishes, for maxPerMinute */
    private readonly recent = new Map<string, number[]>();
    private readonly counts: ActionStats = {published: 0, refused: 0, invalid: 0};

    public constructor(private readonly deps: ActionExecutorDeps) {
        this.byName = new Map(deps.actions.map((a) => [a.name, a]));
    }

    public names(): string[] {
        return [...this.byName.keys()];
    }

    public stats(): ActionStats {
        return {...this.counts};
    }

    /** The granted names that are not configured actions (a request naming one is refused at intake). */
    public unknown(granted: readonly string[]): string[] {
        return granted.filter((name) => !this.byName.has(name));
    }

    /** The granted actions as tools for the model. */
    public definitions(granted: readonly string[]): ToolDefinition[] {
        return granted.flatMap((name) => {
            const a = this.byName.get(name);
            return a ? [{name: a.name, ...(a.description !== "" ? {description: a.description} : {}), parameters: a.parameters}] : [];
        });
    }

    /** One request's calls: its grant, its cap, its dedupe and its records. */
    public forRequest(requestId: string, granted: readonly string[]): RequestActions {
        return new RequestActions(this, requestId, new Set(granted));
    }

    /** What a call would do, without publishing or counting (the `actions test` command). */
    public preview(name: string, args: unknown): ActionRecord & {payload?: string; retain?: boolean; qos?: number} {
        const action = this.byName.get(name);
        if (!action) return {name, arguments: args, status: "refused", reason: `${JSON.stringify(name)} is not a configured action`};
        const checked = this.check(action, args);
        if ("status" in checked) return checked;
        return {name, arguments: args, topic: checked.topic, status: "published", payload: checked.payload, retain: action.retain, qos: action.qos};
    }

    private check(action: Action, args: unknown): {topic: string; payload: string} | ActionRecord {
        const invalid = validateAgainstSchema(action.parameters, args);
        if (invalid !== null) return {name: action.name, arguments: args, status: "invalid", reason: invalid};
        const rendered = renderAction(action, args as Record<string, unknown>, this.deps.device);
        if ("problem" in rendered) return {name: action.name, arguments: args, status: "invalid", reason: rendered.problem};
        const refused = this.deps.policy === null ? null : replyPolicyRefusal(rendered.topic, this.deps.policy);
        if (refused !== null) return {name: action.name, arguments: args, topic: rendered.topic, status: "refused", reason: `the topic ${refused}`};
        return rendered;
    }

    /** @internal RequestActions' step: validate, render, rate-limit, publish. */
    public async execute(requestId: string, name: string, args: unknown): Promise<ActionRecord> {
        const action = this.byName.get(name);
        const record = action ? await this.executeKnown(requestId, action, args)
            : {name, arguments: args, status: "refused" as const, reason: `${JSON.stringify(name.slice(0, 64))} is not a configured action`};
        return this.note(requestId, record);
    }

    /** Counts and logs an outcome (the action, the topic, the request id; never the arguments' values). */
    public note(requestId: string, record: ActionRecord): ActionRecord {
        this.counts[record.status]++;
        const level = record.status === "published" ? "info" : "warn";
        this.deps.log[level](`action ${record.status}`, {id: requestId, action: record.name.slice(0, 64), ...(record.topic ? {topic: record.topic} : {}),
            ...(record.reason ? {reason: record.reason} : {})});
        return record;
    }

    private async executeKnown(requestId: string, action: Action, args: unknown): Promise<ActionRecord> {
        const checked = this.check(action, args);
        if ("status" in checked) return checked;
        const now = this.deps.now?.() ?? Date.now();
        const times = (this.recent.get(action.name) ?? []).filter((t) => now - t < 60_000);
        if (times.length >= action.maxPerMinute) {
            this.recent.set(action.name, times);
            return {name: action.name, arguments: args, topic: checked.topic, status: "refused",
                reason: `rate limited: ${action.name} runs at most ${action.maxPerMinute} times a minute`};
        }
        times.push(now);
        this.recent.set(action.name, times);
        try {
            await this.deps.publish(checked.topic, checked.payload, {qos: action.qos, retain: action.retain});
            return {name: action.name, arguments: args, topic: checked.topic, status: "published"};
        } catch (err) {
            this.deps.log.warn("action publish failed", {id: requestId, action: action.name, topic: checked.topic, ...describeError(err)});
            return {name: action.name, arguments: args, topic: checked.topic, status: "refused", reason: "the broker did not take the message"};
        }
    }
}

export class RequestActions {
    public readonly records: ActionRecord[] = [];
    private readonly done = new Map<string, string>();

    public constructor(private readonly executor: ActionExecutor, private readonly requestId: string, private readonly granted: ReadonlySet<string>) {}

    /** Runs one call; returns the result the model reads. */
    public async run(call: {name: string; arguments: unknown}): Promise<string> {
        const key = JSON.stringify([call.name, call.arguments]);
        const earlier = this.done.get(key);
        if (earlier !== undefined) return earlier; // identical calls run once
        let record: ActionRecord;
        if (!this.granted.has(call.name)) {
            record = this.executor.note(this.requestId, {name: call.name.slice(0, 64), arguments: call.arguments, status: "refused",
                reason: "not granted to this request"});
        } else if (this.done.size >= MAX_CALLS_PER_REQUEST) {
            record = this.executor.note(this.requestId, {name: call.name, arguments: call.arguments, status: "refused",
                reason: `at most ${MAX_CALLS_PER_REQUEST} action calls a request`});
        } else {
            record = await this.executor.execute(this.requestId, call.name, call.arguments);
        }
        this.records.push(record);
        const result = record.status === "published" ? `done: published to ${record.topic}` : `${record.status}: ${record.reason ?? ""}`;
        this.done.set(key, result);
        return result;
    }
}
