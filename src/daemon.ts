/**
 * The composition root: builds every part with its deps, starts them in order, stops them in
 * reverse. Start-up: job store -> MQTT link (status `starting`) -> model (status `loading`) ->
 * replay of unfinished jobs -> `online`. Requests that arrive while the model loads are accepted
 * (journaled, acked) and wait in the queue.
 */
import {createHash} from "node:crypto";
import type {IClientPublishOptions, IPublishPacket} from "mqtt";
import type {QwenEdgeConfig} from "./config.js";
import {describeError, RequestError} from "./errors.js";
import {Engine, type GenerateResult} from "./inference/engine.js";
import {Scheduler, type StopReason} from "./inference/scheduler.js";
import {decodeJob, encodeJob} from "./jobs/codec.js";
import {JobStore} from "./jobs/store.js";
import type {Logger} from "./log.js";
import type {ModelPlan} from "./models/planner.js";
import {MqttLink, type LinkOptions} from "./mqtt/link.js";
import {
    chunkReply, errorReply, okReply, parseCancel, parseRequest,
    type InferenceRequest, type ProtocolLimits, type ReplyTarget
} from "./mqtt/protocol.js";
import {topicLayout, type TopicLayout} from "./mqtt/topics.js";
import {StreamCoalescer} from "./inference/stream.js";
import {bringUpModel} from "./models/bring-up.js";
import {StatusReporter, type StatusMessage} from "./telemetry/status.js";
import {readBrokerSecrets} from "./mqtt/credentials.js";
import {compileRoutes} from "./routes/route.js";
import {Router, textAnswer} from "./routes/router.js";
import {Telemetry, telemetrySubscriptions} from "./telemetry/telemetry.js";

export interface DaemonDeps {
    config: QwenEdgeConfig;
    log: Logger;
    threads: number;
    /** called once the daemon is online (sd_notify READY=1) */
    onReady?: () => void;
    /** every change of the retained status (sd_notify STATUS=) */
    onStatus?: (status: StatusMessage) => void;
    /** the broker connection came up, or went down with an explained reason (sd_notify STATUS=) */
    onBroker?: (connected: boolean, problem?: string) => void;
}

interface Job {
    id: string;
    deadline: number;
    request: InferenceRequest;
}

/** Default thought budget when a request says `thinking: true`: unbounded thoughts wreck small models. */
const DEFAULT_THOUGHT_SHARE = 0.5;

export class Daemon {
    private readonly deps: DaemonDeps;
    private layout!: TopicLayout;
    private limits!: ProtocolLimits;
    private store!: JobStore;
    private link!: MqttLink;
    private engine!: Engine;
    private scheduler!: Scheduler<Job>;
    private status!: StatusReporter;
    private telemetry!: Telemetry;
    private router!: Router;
    /** the model being served (set once it is chosen; model.path or the planner's choice) */
    private modelName = "";
    private modelPath = "";
    /** the planner's decision with every candidate, for the retained info; null with model.path */
    private plan: ModelPlan | null = null;
    private engineState: "loading" | "ready" | "failed" = "loading";
    private engineFailure = "";
    private intakeOpen = true;
    /** health(): finished-job count last seen, and when it last moved */
    private watchFinished = 0;
    private watchProgressAt = Date.now();
    private stopped: Promise<void> | null = null;
    /** messageHash -> id of pending id-less requests, to drop a redelivered copy */
    private readonly pendingHashes = new Map<string, string>();
    /** journaled jobs that parsed as records but could not be decoded at start (dropped, reported in health) */
    private unreadableAtStart = 0;

    public constructor(deps: DaemonDeps) {
        this.deps = deps;
    }

    public async start(): Promise<void> {
        const {config: c, log} = this.deps;
        this.layout = topicLayout(c.mqtt.baseTopic, c.device.id, c.mqtt.fleetGroup);
        this.limits = {
            maxPayloadBytes: c.inference.maxPayloadBytes, maxTokensCap: c.inference.maxTokensCap,
            defaultMaxTokens: c.inference.defaultMaxTokens, maxTimeoutMs: c.inference.maxTimeoutMs,
            defaultTimeoutMs: c.inference.defaultTimeoutMs, maxStopSequences: 8, maxIdLength: 128
        };
        this.router = new Router({log, routes: compileRoutes(c.routes).routes, device: c.device.id, limits: this.limits});
        this.store = new JobStore({log, dir: c.state.dir});
        this.engine = new Engine({log, options: {
            threads: this.deps.threads, contextSize: c.inference.contextSize,
            batchSize: c.inference.batchSize, parallel: c.inference.parallel, systemPrompt: c.inference.systemPrompt, mmap: c.model.mmap,
            sampling: {temperature: c.inference.temperature, topP: c.inference.topP, topK: c.inference.topK, presencePenalty: c.inference.presencePenalty}
        }});
        this.scheduler = new Scheduler<Job>({
            log, maxQueue: c.inference.maxQueue, parallel: c.inference.parallel,
            run: (job, signal, queuedMs) => this.runJob(job, signal, queuedMs),
            expire: (job, reason) => this.answerError(job.request.id, job.request.reply,
                new RequestError(reason, reason === "timeout" ? "the request's deadline passed before it could run" : "cancelled before it ran"))
        });
        this.scheduler.setPaused(true);
        this.link = new MqttLink({
            log, options: this.linkOptions(),
            onMessage: (packet) => this.onMessage(packet),
            onConnect: () => {
                this.deps.onBroker?.(true);
                void this.status.republish();
                this.telemetry.onConnect();
            },
            onDisconnect: (reason) => this.deps.onBroker?.(false, reason)
        });
        this.status = new StatusReporter({log, topic: this.layout.status, link: this.link,
            onChange: (status) => this.deps.onStatus?.(status)});
        this.telemetry = new Telemetry({log, config: c, layout: this.layout, link: this.link, status: this.status,
            modelPath: () => this.modelPath, modelName: () => this.modelName, threads: this.deps.threads, limits: this.limits,
            schedulerStats: () => this.scheduler.stats(), engineStats: () => this.engine.stats(), modelState: () => this.engineState,
            modelDecision: () => this.plan,
            jobStats: () => ({pending: this.store.stats().pending, damagedAtStart: this.store.stats().droppedAtOpen + this.unreadableAtStart}),
            // thermal pauses must not resume a queue that waits for the model
            setPaused: (paused) => this.scheduler.setPaused(paused || this.engineState !== "ready")});

        await this.store.start();
        // Only what was journaled before this start is replayed: a request the broker redelivers once
        // we connect is accepted (journaled, queued) by onMessage and must not be queued twice.
        const unfinished = this.store.pending();
        this.link.start();
        void this.status.set("starting");
        await this.telemetry.start().catch((err: unknown) => log.error("telemetry failed to start", describeError(err)));
        this.replayPending(unfinished);
        let fallback: string | null = null;
        try {
            await this.engine.start();
            const loaded = await bringUpModel({config: c, log, engine: this.engine,
                onPhase: (_phase, progress) => void this.status.set("loading", {progress})});
            Object.assign(this, {modelName: loaded.name, modelPath: loaded.path, plan: loaded.plan});
            fallback = loaded.fallback;
            this.engineState = "ready";
        } catch (err) {
            this.engineState = "failed";
            this.engineFailure = describeError(err).message;
            log.error("model failed to load; answering model_unavailable", describeError(err));
            this.failQueued();
        }
        if (this.engineState === "ready") {
            this.scheduler.setPaused(false);
            if (fallback) void this.status.setCondition("model", `model fallback: ${fallback}`);
            await this.status.set("online");
        } else {
            await this.status.set("degraded", {reason: `model unavailable: ${this.engineFailure}`});
        }
        this.deps.onReady?.();
    }

    /** Idempotent: stops intake, drains, publishes `offline`, disconnects. */
    public stop(): Promise<void> {
        this.stopped ??= this.shutdown();
        return this.stopped;
    }

    /**
     * Liveness for the service watchdog (sd_notify WATCHDOG=1). Every job ends by its deadline (at
     * most inference.maxTimeoutMs, aborted if need be), so busy slots with no job finishing for
     * longer than that mean generation is wedged, and only a restart frees it. A failed model load
     * is not unhealthy: the daemon stays up, degraded, answering model_unavailable.
     */
    public health(): {ok: boolean; reason?: string} {
        if (!this.scheduler) return {ok: true};
        const s = this.scheduler.stats();
        const finished = s.completed + s.expired;
        const now = Date.now();
        if (s.running === 0 || finished !== this.watchFinished) {
            this.watchFinished = finished;
            this.watchProgressAt = now;
            return {ok: true};
        }
        const stuckMs = now - this.watchProgressAt;
        const limitMs = this.deps.config.inference.maxTimeoutMs + 60_000;
        return stuckMs <= limitMs ? {ok: true} : {ok: false, reason: `${s.running} generation(s) running and none finished for ${Math.round(stuckMs / 1000)} s`};
    }

    private async shutdown(): Promise<void> {
        const {log, config} = this.deps;
        const started = Date.now();
        this.intakeOpen = false;
        log.info("shutting down", {drainMs: config.shutdown.drainMs});
        const drain = await this.scheduler.stop(config.shutdown.drainMs);
        await this.engine.stop().catch((err: unknown) => log.warn("engine stop failed", describeError(err)));
        await this.telemetry.stop();
        if (this.link.connected) {
            let timer: NodeJS.Timeout | undefined;
            await Promise.race([this.status.set("offline"), new Promise((r) => { timer = setTimeout(r, 2000); })]);
            clearTimeout(timer);
        }
        await this.link.stop();
        await this.store.stop();
        log.info("stopped", {ms: Date.now() - started, ...drain, keptForNextStart: this.store.stats().pending});
    }

    private linkOptions(): LinkOptions {
        const m = this.deps.config.mqtt;
        // Files only (mqtt.passwordFile or the systemd credential), never argv or the environment.
        const secrets = readBrokerSecrets(m);
        for (const warning of secrets.warnings) this.deps.log.warn("mqtt credentials", {problem: warning});
        this.deps.log.debug("mqtt credentials", {username: m.username !== "", password: secrets.passwordSource,
            tls: {ca: secrets.ca !== undefined, clientCert: secrets.cert !== undefined}});
        const subscriptions: LinkOptions["subscriptions"] = [
            {filter: this.layout.request, qos: 1},
            {filter: this.layout.cancel, qos: 1}
        ];
        if (this.layout.fleetRequest) subscriptions.push({filter: this.layout.fleetRequest, qos: 1});
        subscriptions.push(...telemetrySubscriptions(this.deps.config), ...this.router.subscriptions());
        return {
            url: m.url, clientId: m.clientId, keepaliveSeconds: m.keepaliveSeconds, sessionExpirySeconds: m.sessionExpirySeconds,
            connectTimeoutMs: m.connectTimeoutMs, reconnectMinMs: m.reconnectMinMs, reconnectMaxMs: m.reconnectMaxMs,
            will: {topic: this.layout.status, payload: JSON.stringify({state: "offline", since: new Date().toISOString(), reason: "connection lost"})},
            subscriptions, maxPayloadBytes: this.deps.config.inference.maxPayloadBytes,
            ...(m.username ? {username: m.username} : {}),
            ...(secrets.password ? {password: secrets.password} : {}),
            ...(secrets.ca ? {ca: secrets.ca} : {}),
            ...(secrets.cert ? {cert: secrets.cert} : {}),
            ...(secrets.key ? {key: secrets.key} : {})
        };
    }

    /** Intake: validate, journal durably, queue. Resolving sends the PUBACK. */
    private async onMessage(packet: IPublishPacket): Promise<void> {
        if (!this.intakeOpen) throw new Error("shutting down: left for redelivery");
        const topic = packet.topic;
        const payload = typeof packet.payload === "string" ? Buffer.from(packet.payload) : packet.payload;
        const props = packet.properties ?? {};
        if (topic === this.layout.cancel) {
            this.onCancel(payload);
            return;
        }
        if (this.telemetry.handles(topic)) return this.telemetry.onMessage(topic, payload);
        const receivedAt = Date.now();
        const routed = this.router.intake({topic, payload, receivedAt, retain: packet.retain,
            ...(props.messageExpiryInterval !== undefined ? {messageExpirySeconds: props.messageExpiryInterval} : {})});
        if (routed === "dropped") return;
        const source = routed?.source ?? (topic === this.layout.request ? "device" : "fleet");
        const parsed = routed?.parsed ?? parseRequest({
            topic, payload, receivedAt, source,
            ...(props.responseTopic !== undefined ? {responseTopic: props.responseTopic} : {}),
            ...(props.correlationData !== undefined ? {correlationData: props.correlationData} : {}),
            ...(props.messageExpiryInterval !== undefined ? {messageExpirySeconds: props.messageExpiryInterval} : {})
        }, this.layout, this.limits);
        if (!parsed.ok) {
            this.deps.log.warn("request refused", {id: parsed.id, code: parsed.error.code, bytes: payload.length, source,
                message: parsed.error.message});
            this.answerError(parsed.id, parsed.reply, parsed.error);
            return;
        }
        const request = parsed.request;
        const messageHash = createHash("sha256").update(topic).update("\0").update(props.correlationData ?? "").update("\0").update(payload).digest("hex");
        if (this.isDuplicate(request, messageHash, packet.dup)) return;
        if (this.engineState === "failed") {
            this.answerError(request.id, request.reply, new RequestError("model_unavailable", `the model is unavailable: ${this.engineFailure}`));
            return;
        }
        const stats = this.scheduler.stats();
        if (this.scheduler.isFull()) {
            const error = this.scheduler.refuse();
            this.deps.log.warn("request refused", {id: request.id, code: error.code, queued: stats.queued, retryAfterMs: error.details.retryAfterMs});
            this.answerError(request.id, request.reply, error);
            return;
        }
        await this.store.accept(request.id, encodeJob({request, messageHash}));
        this.pendingHashes.set(messageHash, request.id);
        this.router.note(request.reply, "accepted");
        this.deps.log.info("request accepted", {id: request.id, source, ...routeField(request.reply), bytes: payload.length, stream: request.stream,
            maxTokens: request.maxTokens, queued: stats.queued});
        this.scheduler.submit({id: request.id, deadline: request.deadline, request});
    }

    private isDuplicate(request: InferenceRequest, messageHash: string, dup: boolean): boolean {
        const byId = this.store.lookup(request.id);
        const byHash = dup && this.pendingHashes.has(messageHash);
        if (byId === null && !byHash) return false;
        this.deps.log.info("duplicate request dropped", {id: request.id, previous: byId ?? "pending", dup});
        return true;
    }

    private onCancel(payload: Buffer): void {
        const parsed = parseCancel(payload);
        if (!parsed.ok) {
            this.deps.log.warn("cancel refused", {code: parsed.error.code, message: parsed.error.message});
            return;
        }
        const found = this.scheduler.cancel(parsed.id);
        this.deps.log.info("cancel", {id: parsed.id, found});
    }

    /** Jobs accepted before a crash or restart run again (or time out) exactly once. */
    private replayPending(unfinished: ReturnType<JobStore["pending"]>): void {
        for (const stored of unfinished) {
            const decoded = decodeJob(stored.request);
            if (!decoded) {
                this.deps.log.warn("unreadable journaled job dropped", {key: stored.key});
                this.unreadableAtStart++;
                void this.store.finish(stored.key);
                continue;
            }
            const {request, messageHash} = decoded;
            if (messageHash) this.pendingHashes.set(messageHash, request.id);
            this.deps.log.info("replaying unfinished request", {id: request.id, ageMs: Date.now() - request.receivedAt});
            try {
                this.scheduler.submit({id: request.id, deadline: request.deadline, request}, {force: true});
            } catch (err) {
                this.answerError(request.id, request.reply, err instanceof RequestError ? err : new RequestError("internal", "replay failed"));
            }
        }
    }

    private failQueued(): void {
        for (const job of this.scheduler.takeQueued())
            this.answerError(job.id, job.request.reply, new RequestError("model_unavailable", `the model is unavailable: ${this.engineFailure}`));
    }

    private async runJob(job: Job, signal: AbortSignal, queuedMs: number): Promise<void> {
        const r = job.request;
        const stream = r.stream ? new StreamCoalescer({
            intervalMs: this.deps.config.inference.streamIntervalMs,
            emit: (seq, delta, part) => this.publishReply(r.reply, JSON.stringify(chunkReply(r.id, seq, delta, part)), 0)
        }) : null;
        let result: GenerateResult;
        try {
            result = await this.engine.generate({
                id: r.id, maxTokens: r.maxTokens, signal,
                ...(r.prompt !== undefined ? {prompt: r.prompt} : {}),
                ...(r.messages !== undefined ? {messages: r.messages} : {}),
                ...(r.system !== undefined ? {system: r.system} : {}),
                ...(r.temperature !== undefined ? {temperature: r.temperature} : {}),
                ...(r.topP !== undefined ? {topP: r.topP} : {}),
                ...(r.topK !== undefined ? {topK: r.topK} : {}),
                ...(r.minP !== undefined ? {minP: r.minP} : {}),
                ...(r.seed !== undefined ? {seed: r.seed} : {}),
                ...(r.stop !== undefined ? {stop: r.stop} : {}),
                ...(r.jsonSchema !== undefined ? {jsonSchema: r.jsonSchema} : {}),
                thoughtBudget: r.thinking === false ? false : r.thinking === true ? Math.floor(r.maxTokens * DEFAULT_THOUGHT_SHARE) : r.thinking.budget,
                ...(stream ? {onTextDelta: (delta: string) => stream.push(delta), onThoughtDelta: (delta: string) => stream.push(delta, "thinking")} : {})
            });
        } catch (err) {
            stream?.close();
            const error = err instanceof RequestError ? err : new RequestError("internal", "generation failed");
            if (!(err instanceof RequestError)) this.deps.log.error("generation failed", {id: r.id, ...describeError(err)});
            this.answerError(r.id, r.reply, error);
            return;
        }
        stream?.close();
        const reason = signal.reason as StopReason | undefined;
        if (result.finishReason === "aborted" && reason === "shutdown") {
            this.deps.log.info("generation stopped by shutdown; kept for the next start", {id: r.id, completionTokens: result.completionTokens});
            return;
        }
        const finishReason = result.finishReason === "aborted" ? (reason === "timeout" ? "timeout" : "cancelled") : result.finishReason;
        // after the first token: the rate of generation alone, prompt evaluation excluded
        const genSeconds = (result.totalMs - (result.ttftMs ?? 0)) / 1000;
        const reply = okReply({
            id: r.id, text: result.text, finishReason,
            ...(result.thinking !== null ? {thinking: result.thinking} : {}),
            ...(result.json !== undefined ? {json: result.json} : {}),
            usage: {promptTokens: result.promptTokens, completionTokens: result.completionTokens, thinkingTokens: result.thinkingTokens},
            timing: {queueMs: queuedMs, ttftMs: result.ttftMs, totalMs: queuedMs + result.totalMs,
                tokensPerSecond: genSeconds > 0 && result.completionTokens > 1 ? (result.completionTokens - 1) / genSeconds : 0},
            model: this.modelName, device: this.layout.device
        });
        this.deps.log.info("request done", {id: r.id, ...routeField(r.reply), finishReason, promptTokens: result.promptTokens,
            completionTokens: result.completionTokens, thinkingTokens: result.thinkingTokens, queueMs: queuedMs, ttftMs: result.ttftMs, totalMs: result.totalMs,
            textBytes: Buffer.byteLength(result.text)});
        this.telemetry.recordGeneration({promptTokens: result.promptTokens, completionTokens: result.completionTokens, ttftMs: result.ttftMs, totalMs: result.totalMs});
        // A "text" route publishes the answer alone, or nothing when there is none (see textAnswer).
        const text = r.reply.format === "text" ? textAnswer(reply) : undefined;
        this.router.note(r.reply, text === null ? "failed" : "answered", {id: r.id, code: text === null ? `no_answer_${finishReason}` : finishReason});
        this.finishWith(r.id, r.reply, text === undefined ? JSON.stringify(reply) : text, true);
    }

    private answerError(id: string | null, reply: ReplyTarget, error: RequestError): void {
        this.telemetry.recordError(error.code);
        // A route's unreadable payload (no id yet) was counted by the router already.
        if (id !== null) this.router.note(reply, "failed", {id, code: error.code});
        // A text reply carries answers only: a dashboard or actuator could not tell an error from one.
        const payload = reply.format === "text" ? null : JSON.stringify(errorReply(id, error, {model: this.modelName, device: this.layout.device}));
        if (id !== null && this.store.lookup(id) === "pending") this.finishWith(id, reply, payload, false);
        else if (payload !== null) this.publishReply(reply, payload, 1);
    }

    /** Publishes the final reply (null: nothing to publish); the job is marked done once the broker has it. */
    private finishWith(id: string, reply: ReplyTarget, payload: string | null, answer: boolean): void {
        void (payload === null ? Promise.resolve() : this.link.publish(reply.topic, payload, replyOptions(reply, 1, answer)))
            .then(() => {
                for (const [hash, pendingId] of this.pendingHashes) if (pendingId === id) this.pendingHashes.delete(hash);
                return this.store.finish(id);
            })
            .catch((err: unknown) => this.deps.log.warn("reply publish failed; the job stays pending", {id, message: (err as Error).message}));
    }

    private publishReply(reply: ReplyTarget, payload: string, qos: 0 | 1): void {
        void this.link.publish(reply.topic, payload, replyOptions(reply, qos, false))
            .catch((err: unknown) => this.deps.log.warn("reply publish failed", {topic: reply.topic, message: (err as Error).message}));
    }
}

/**
 * A reply's publish options: a route's QoS; retained only for a route's answer, so an error never
 * replaces the last retained answer.
 */
function replyOptions(reply: ReplyTarget, qos: 0 | 1, answer: boolean): IClientPublishOptions {
    return {qos: reply.qos ?? qos, ...(answer && reply.retain === true ? {retain: true} : {}),
        ...(reply.correlationData ? {properties: {correlationData: reply.correlationData}} : {})};
}

/** Log field naming the route a request came from. */
function routeField(reply: ReplyTarget): {route?: string} {
    return reply.route !== undefined ? {route: reply.route} : {};
}
