/**
 * The composition root: builds every part with its deps, starts them in order, stops them in
 * reverse. Start-up: job store -> MQTT link (status `starting`) -> model (status `loading`) ->
 * replay of unfinished jobs -> `online`. Requests that arrive while the model loads are accepted
 * (journaled, acked) and wait in the queue.
 */
import {createHash} from "node:crypto";
import {readFileSync} from "node:fs";
import {basename, join} from "node:path";
import type {IPublishPacket} from "mqtt";
import type {QwenEdgeConfig} from "./config.js";
import {describeError, RequestError} from "./errors.js";
import {Engine, type GenerateResult} from "./inference/engine.js";
import {Scheduler, type StopReason} from "./inference/scheduler.js";
import {decodeJob, encodeJob} from "./jobs/codec.js";
import {JobStore} from "./jobs/store.js";
import type {Logger} from "./log.js";
import {MqttLink, type LinkOptions} from "./mqtt/link.js";
import {
    chunkReply, errorReply, okReply, parseCancel, parseRequest,
    type InferenceRequest, type ProtocolLimits, type ReplyTarget
} from "./mqtt/protocol.js";
import {topicLayout, type TopicLayout} from "./mqtt/topics.js";
import {StreamCoalescer} from "./inference/stream.js";
import {StatusReporter} from "./telemetry/status.js";

export interface DaemonDeps {
    config: QwenEdgeConfig;
    log: Logger;
    /** the GGUF to serve (chosen by the planner or given with --model-path) */
    modelPath: string;
    threads: number;
    /** called once the daemon is online (sd_notify READY=1) */
    onReady?: () => void;
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
    private modelName = "";
    private engineState: "loading" | "ready" | "failed" = "loading";
    private engineFailure = "";
    private intakeOpen = true;
    private stopped: Promise<void> | null = null;
    /** messageHash -> id of pending id-less requests, to drop a redelivered copy */
    private readonly pendingHashes = new Map<string, string>();

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
        this.modelName = basename(this.deps.modelPath).replace(/\.gguf$/i, "");
        this.store = new JobStore({log, dir: c.state.dir});
        this.engine = new Engine({log, options: {
            modelPath: this.deps.modelPath, threads: this.deps.threads, contextSize: c.inference.contextSize,
            batchSize: c.inference.batchSize, parallel: c.inference.parallel, systemPrompt: c.inference.systemPrompt,
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
            onConnect: () => void this.status.republish(),
            onDisconnect: () => undefined
        });
        this.status = new StatusReporter({log, topic: this.layout.status, link: this.link});

        await this.store.start();
        this.link.start();
        void this.status.set("starting");
        this.replayPending();
        await this.status.set("loading", {progress: {phase: "loading", model: this.modelName}});
        try {
            await this.engine.start();
            this.engineState = "ready";
        } catch (err) {
            this.engineState = "failed";
            this.engineFailure = describeError(err).message;
            log.error("model failed to load; answering model_unavailable", describeError(err));
            this.failQueued();
        }
        if (this.engineState === "ready") {
            this.scheduler.setPaused(false);
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

    private async shutdown(): Promise<void> {
        const {log, config} = this.deps;
        const started = Date.now();
        this.intakeOpen = false;
        log.info("shutting down", {drainMs: config.shutdown.drainMs});
        const drain = await this.scheduler.stop(config.shutdown.drainMs);
        await this.engine.stop().catch((err: unknown) => log.warn("engine stop failed", describeError(err)));
        if (this.link.connected) {
            await Promise.race([this.status.set("offline"), new Promise((r) => setTimeout(r, 2000))]);
        }
        await this.link.stop();
        await this.store.stop();
        log.info("stopped", {ms: Date.now() - started, ...drain, keptForNextStart: this.store.stats().pending});
    }

    private linkOptions(): LinkOptions {
        const m = this.deps.config.mqtt;
        const readSecretFile = (path: string): Buffer => readFileSync(path);
        const credentialsDir = process.env.CREDENTIALS_DIRECTORY;
        const passwordPath = m.passwordFile !== "" ? m.passwordFile : credentialsDir ? join(credentialsDir, "mqtt-password") : "";
        let password: Buffer | undefined;
        if (passwordPath !== "") {
            try {
                password = Buffer.from(readSecretFile(passwordPath).toString("utf8").replace(/\r?\n$/, ""));
            } catch (err) {
                if (m.passwordFile !== "") throw err; // an absent systemd credential just means no password
            }
        }
        const subscriptions: LinkOptions["subscriptions"] = [
            {filter: this.layout.request, qos: 1},
            {filter: this.layout.cancel, qos: 1}
        ];
        if (this.layout.fleetRequest) subscriptions.push({filter: this.layout.fleetRequest, qos: 1});
        return {
            url: m.url, clientId: m.clientId, keepaliveSeconds: m.keepaliveSeconds, sessionExpirySeconds: m.sessionExpirySeconds,
            connectTimeoutMs: m.connectTimeoutMs, reconnectMinMs: m.reconnectMinMs, reconnectMaxMs: m.reconnectMaxMs,
            will: {topic: this.layout.status, payload: JSON.stringify({state: "offline", since: new Date().toISOString(), reason: "connection lost"})},
            subscriptions, maxPayloadBytes: this.deps.config.inference.maxPayloadBytes,
            ...(m.username ? {username: m.username} : {}),
            ...(password ? {password} : {}),
            ...(m.ca ? {ca: readSecretFile(m.ca)} : {}),
            ...(m.cert ? {cert: readSecretFile(m.cert)} : {}),
            ...(m.key ? {key: readSecretFile(m.key)} : {})
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
        const source = topic === this.layout.request ? "device" : "fleet";
        const receivedAt = Date.now();
        const parsed = parseRequest({
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
        this.deps.log.info("request accepted", {id: request.id, source, bytes: payload.length, stream: request.stream,
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
    private replayPending(): void {
        for (const stored of this.store.pending()) {
            const decoded = decodeJob(stored.request);
            if (!decoded) {
                this.deps.log.warn("unreadable journaled job dropped", {key: stored.key});
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
            emit: (seq, delta) => this.publishReply(r.reply, JSON.stringify(chunkReply(r.id, seq, delta)), 0)
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
                ...(stream ? {onTextDelta: (delta: string) => stream.push(delta)} : {})
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
        const genSeconds = (result.totalMs - (result.ttftMs ?? 0)) / 1000;
        const reply = okReply({
            id: r.id, text: result.text, finishReason,
            ...(result.thinking !== null ? {thinking: result.thinking} : {}),
            ...(result.json !== undefined ? {json: result.json} : {}),
            usage: {promptTokens: result.promptTokens, completionTokens: result.completionTokens},
            timing: {queueMs: queuedMs, ttftMs: result.ttftMs, totalMs: queuedMs + result.totalMs,
                tokensPerSecond: genSeconds > 0 && result.completionTokens > 1 ? (result.completionTokens - 1) / genSeconds : 0},
            model: this.modelName, device: this.layout.device
        });
        this.deps.log.info("request done", {id: r.id, finishReason, promptTokens: result.promptTokens,
            completionTokens: result.completionTokens, queueMs: queuedMs, ttftMs: result.ttftMs, totalMs: result.totalMs,
            textBytes: Buffer.byteLength(result.text)});
        this.finishWith(r.id, r.reply, JSON.stringify(reply));
    }

    private answerError(id: string | null, reply: ReplyTarget, error: RequestError): void {
        const payload = JSON.stringify(errorReply(id, error, {model: this.modelName, device: this.layout.device}));
        if (id !== null && this.store.lookup(id) === "pending") this.finishWith(id, reply, payload);
        else this.publishReply(reply, payload, 1);
    }

    /** Publishes the final reply; the job is marked done once the broker has it. */
    private finishWith(id: string, reply: ReplyTarget, payload: string): void {
        void this.link.publish(reply.topic, payload, {qos: 1, ...(reply.correlationData ? {properties: {correlationData: reply.correlationData}} : {})})
            .then(() => {
                for (const [hash, pendingId] of this.pendingHashes) if (pendingId === id) this.pendingHashes.delete(hash);
                return this.store.finish(id);
            })
            .catch((err: unknown) => this.deps.log.warn("reply publish failed; the job stays pending", {id, message: (err as Error).message}));
    }

    private publishReply(reply: ReplyTarget, payload: string, qos: 0 | 1): void {
        void this.link.publish(reply.topic, payload, {qos, ...(reply.correlationData ? {properties: {correlationData: reply.correlationData}} : {})})
            .catch((err: unknown) => this.deps.log.warn("reply publish failed", {topic: reply.topic, message: (err as Error).message}));
    }
}
