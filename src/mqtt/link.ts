/**
 * MqttLink: the one MQTT.js client. MQTT v5, fixed client id, persistent session (so requests sent
 * while we are away wait at the broker), a retained `offline` will, and reconnects with exponential
 * backoff (MQTT.js's own reconnect period is constant, so we drive reconnects ourselves).
 *
 * Incoming publishes are handed to `onMessage`; its promise resolving is what sends the PUBACK
 * (MQTT.js acks when handleMessage's callback runs). The daemon resolves it once the job is on disk.
 * Subscriptions can be dropped and taken again while connected (a fleet member leaving the shared
 * queue while it cannot take work); a subscription the broker refuses is reported, not just logged.
 */
import mqtt, {UniqueMessageIdProvider, type IClientOptions, type IClientPublishOptions, type IPublishPacket, type IStore, type MqttClient} from "mqtt";
import {BrokerError} from "../errors.js";
import {redactUrl} from "../util/url.js";
import {withTimeout} from "../util/timeout.js";
import {brokerAuth, type BrokerAuth} from "./credentials.js";
import type {Logger} from "../log.js";

export interface LinkOptions extends BrokerAuth {
    url: string;
    clientId: string;
    keepaliveSeconds: number;
    sessionExpirySeconds: number;
    connectTimeoutMs: number;
    reconnectMinMs: number;
    reconnectMaxMs: number;
    will: {topic: string; payload: string};
    /** topic filters with QoS, subscribed on every connect */
    subscriptions: Array<{filter: string; qos: 0 | 1}>;
    maxPayloadBytes: number;
    /** where MQTT.js keeps unacknowledged publishes (src/mqtt/outgoing-store.ts keeps QoS 2 ones on disk); default in memory */
    outgoingStore?: IStore;
}

/** How a connection ended, for telling a session takeover from a network or broker problem. */
export interface LinkClose {
    reason: string;
    /** how long the connection had lasted */
    connectedMs: number;
    /** no socket error, no DISCONNECT packet and no keepalive timeout: the broker just closed it */
    silent: boolean;
}

export interface LinkDeps {
    log: Logger;
    options: LinkOptions;
    onMessage: (packet: IPublishPacket) => Promise<void>;
    onConnect: (sessionPresent: boolean) => void;
    onDisconnect: (reason: string, close: LinkClose) => void;
    /** a subscription the broker took (problem null) or refused (the reason), after each SUBACK */
    onSubscription?: (filter: string, problem: string | null) => void;
}

export interface LinkStats {
    connected: boolean;
    connects: number;
    reconnects: number;
    lastConnectAt: string | null;
    lastError: string | null;
}

export class MqttLink {
    private readonly deps: LinkDeps;
    private client: MqttClient | null = null;
    private stopping = false;
    private attempt = 0;
    private reconnectTimer: NodeJS.Timeout | null = null;
    private connects = 0;
    private lastConnectAt: Date | null = null;
    private lastError: string | null = null;
    private lastLoggedError: string | null = null;
    /** the broker's Maximum Packet Size from the last CONNACK; undefined when it announced none */
    private brokerMaxPacket: number | undefined;
    /** the broker's Maximum QoS from the last CONNACK (AWS IoT Core, for one, takes no QoS 2) */
    private brokerMaxQos: 0 | 1 | 2 = 2;
    private readonly connectWaiters = new Set<() => void>();
    /** filters to hold, with their QoS: subscribed on every connect */
    private readonly wanted = new Map<string, 0 | 1>();
    /** what ended the current connection, if we saw it: an error event or a DISCONNECT packet */
    private closeCause: string | null = null;
    /** no reconnect sooner than this (e.g. while another client seems to use our client id) */
    private reconnectFloorMs = 0;
    /** the current connection got its CONNACK (a close before it is a failed attempt, not a takeover) */
    private upSinceConnect = false;

    public constructor(deps: LinkDeps) {
        this.deps = deps;
    }

    public start(): void {
        const o = this.deps.options;
        for (const sub of o.subscriptions) this.wanted.set(sub.filter, sub.qos);
        const options: IClientOptions = {
            protocolVersion: 5,
            clientId: o.clientId,
            clean: false,
            keepalive: o.keepaliveSeconds,
            connectTimeout: o.connectTimeoutMs,
            reconnectPeriod: 0,
            queueQoSZero: false,
            resubscribe: false,
            properties: {sessionExpiryInterval: o.sessionExpirySeconds, maximumPacketSize: o.maxPayloadBytes + 64 * 1024},
            will: {topic: o.will.topic, payload: Buffer.from(o.will.payload), qos: 1, retain: true},
            ...brokerAuth(o.username ?? "", o),
            rejectUnauthorized: true,
            ...(o.outgoingStore ? {outgoingStore: o.outgoingStore} : {}),
            // packets kept from before a restart hold their ids until the broker completes them: new ones must not reuse them
            messageIdProvider: new UniqueMessageIdProvider()
        };
        const client = mqtt.connect(o.url, options);
        this.client = client;
        client.handleMessage = (packet, done) => {
            this.deps.onMessage(packet).then(() => done(), (err: unknown) => {
                // No PUBACK: the broker keeps the message and redelivers it.
                this.deps.log.error("message not accepted; left for redelivery", {message: (err as Error).message});
                done(err as Error);
            });
        };
        client.on("connect", (connack) => {
            this.attempt = 0;
            this.connects++;
            this.lastConnectAt = new Date();
            this.lastLoggedError = null;
            this.brokerMaxPacket = connack.properties?.maximumPacketSize;
            const maxQos = connack.properties?.maximumQoS;
            this.brokerMaxQos = maxQos === 0 || maxQos === 1 ? maxQos : 2;
            // MQTT.js leaves Nagle on: short replies after a PUBACK would wait ~40 ms (docs/DESIGN.md).
            const stream = client.stream as {setNoDelay?: (on: boolean) => void};
            stream.setNoDelay?.(true);
            this.deps.log.info("mqtt connected", {url: redactUrl(o.url), clientId: o.clientId, sessionPresent: connack.sessionPresent,
                connects: this.connects});
            this.closeCause = null;
            this.upSinceConnect = true;
            for (const [filter, qos] of this.wanted) this.subscribe(filter, qos);
            this.deps.onConnect(connack.sessionPresent);
            for (const resolve of this.connectWaiters) resolve();
            this.connectWaiters.clear();
        });
        client.on("error", (err) => {
            this.closeCause ??= err.message;
            this.noteError(err);
        });
        client.on("disconnect", (packet) => {
            this.closeCause = `the broker disconnected us (reason code 0x${(packet.reasonCode ?? 0).toString(16)})`;
        });
        client.on("close", () => {
            if (this.stopping) return;
            const connectedMs = this.lastConnectAt === null ? 0 : Date.now() - this.lastConnectAt.getTime();
            const silent = this.closeCause === null && this.upSinceConnect;
            this.upSinceConnect = false;
            this.deps.onDisconnect(this.lastError ?? "connection closed", {reason: this.closeCause ?? "closed by the broker", connectedMs, silent});
            this.closeCause = null;
            this.scheduleReconnect();
        });
    }

    /**
     * Holds (true) or drops (false) a subscription, at once when connected and at every connect after.
     * Resolves when the broker answered (or at once when not connected).
     */
    public async setSubscribed(filter: string, qos: 0 | 1, on: boolean): Promise<void> {
        if (on === this.wanted.has(filter)) return;
        if (on) this.wanted.set(filter, qos);
        else this.wanted.delete(filter);
        const client = this.client;
        if (!client?.connected) return;
        if (on) {
            this.subscribe(filter, qos);
            return;
        }
        await client.unsubscribeAsync(filter).catch((err: unknown) =>
            this.deps.log.warn("mqtt unsubscribe failed", {filter, message: (err as Error).message}));
    }

    /** No reconnect sooner than `ms` (0: the normal backoff). */
    public setReconnectFloor(ms: number): void {
        this.reconnectFloorMs = Math.max(0, ms);
    }

    /** Resolves at the next successful connect (at once if connected). */
    public whenConnected(): Promise<void> {
        if (this.client?.connected) return Promise.resolve();
        return new Promise((resolve) => this.connectWaiters.add(resolve));
    }

    public get connected(): boolean {
        return this.client?.connected ?? false;
    }

    /**
     * The broker's Maximum Packet Size (CONNACK property) on the current connection, or undefined.
     * A PUBLISH larger than this makes the broker disconnect us (Mosquitto: DISCONNECT 0x95), so reply
     * topics are checked against it (brokerTopicProblem).
     */
    public brokerMaximumPacketSize(): number | undefined {
        return this.brokerMaxPacket;
    }

    /** The highest QoS the broker takes from us (CONNACK Maximum QoS; 2 when it announced none). */
    public brokerMaximumQos(): 0 | 1 | 2 {
        return this.brokerMaxQos;
    }

    /** Publishes; resolves when the broker has it (QoS 1) or it is written (QoS 0). */
    public async publish(topic: string, payload: string | Buffer, options: IClientPublishOptions = {}): Promise<void> {
        if (!this.client) throw new BrokerError("broker_unreachable", "the MQTT link is not started");
        await this.client.publishAsync(topic, payload, options);
    }

    /** Publishes at QoS 0 only while connected; telemetry is dropped rather than queued. */
    public publishIfConnected(topic: string, payload: string, options: IClientPublishOptions = {}): void {
        if (!this.client?.connected) return;
        this.client.publish(topic, payload, {qos: 0, ...options}, (err) => {
            if (err) this.deps.log.debug("telemetry publish failed", {topic, message: err.message});
        });
    }

    public stats(): LinkStats {
        return {connected: this.connected, connects: this.connects, reconnects: Math.max(0, this.connects - 1),
            lastConnectAt: this.lastConnectAt?.toISOString() ?? null, lastError: this.lastError};
    }

    /** Ends the connection without the will: publish `offline` first. Bounded in time. */
    public async stop(timeoutMs = 3000): Promise<void> {
        this.stopping = true;
        if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
        const client = this.client;
        if (!client) return;
        await withTimeout(client.endAsync(false).catch(() => undefined), timeoutMs, () => undefined);
        if (!client.disconnected) client.end(true);
    }

    private subscribe(filter: string, qos: 0 | 1): void {
        this.client?.subscribe(filter, {qos}, (err, granted) => {
            // v5: a SUBACK reason code of 0x80 or more in `qos` means refused (e.g. 0x87 not authorized by an ACL)
            const code = granted?.[0]?.qos;
            const problem = err ? err.message : code !== undefined && code >= 0x80 ? `refused by the broker (reason code 0x${code.toString(16)})` : null;
            if (problem !== null) this.deps.log.error("mqtt subscribe failed", {filter, problem});
            this.deps.onSubscription?.(filter, problem);
        });
    }

    private scheduleReconnect(): void {
        if (this.reconnectTimer || this.stopping) return;
        const o = this.deps.options;
        const base = Math.max(this.reconnectFloorMs, Math.min(o.reconnectMaxMs, o.reconnectMinMs * 2 ** Math.min(this.attempt, 16)));
        const delay = Math.round(base * (0.8 + Math.random() * 0.4)); // jitter: a fleet must not reconnect in lockstep
        this.attempt++;
        this.deps.log.info("mqtt reconnect scheduled", {inMs: delay, attempt: this.attempt});
        this.reconnectTimer = setTimeout(() => {
            this.reconnectTimer = null;
            const client = this.client;
            // reconnect() without stores starts empty ones: QoS 1 publishes made while we were away (final
            // replies) or not yet acknowledged would be dropped and their promises never settle. Keep ours.
            if (!this.stopping && client) client.reconnect({incomingStore: client.incomingStore, outgoingStore: client.outgoingStore});
        }, delay);
    }

    private noteError(err: Error & {code?: string | number}): void {
        const o = this.deps.options;
        const explained = explainConnectError(err, o.url, {ca: o.ca !== undefined, clientCert: o.cert !== undefined});
        this.lastError = explained.message;
        // One line per distinct problem: a broker that stays down must not flood the journal.
        if (explained.message !== this.lastLoggedError) {
            this.lastLoggedError = explained.message;
            this.deps.log.error("mqtt connection problem", {code: explained.code, reason: explained.message,
                retrying: `with backoff up to ${o.reconnectMaxMs} ms`});
        }
    }
}

/** What explainConnectError may mention: which TLS files were configured. */
export interface ConnectContext {
    ca: boolean;
    clientCert: boolean;
}

const PASSWORD_HINT = "mqtt.username and the password (mqtt.passwordFile, or the systemd credential mqtt-password)";

/**
 * Turns socket, TLS and CONNACK errors into one actionable sentence. The codes were measured
 * against Mosquitto 2.0 with MQTT.js 5: a bad password or user is CONNACK 135 at v5 (5 at v3.1.1);
 * other brokers send 134 (4). A wrong CA is SELF_SIGNED_CERT_IN_CHAIN or UNABLE_TO_VERIFY_*, an
 * expired broker certificate CERT_HAS_EXPIRED, a missing client certificate an OpenSSL alert.
 */
export function explainConnectError(err: Error & {code?: string | number}, url: string,
    context: ConnectContext = {ca: false, clientCert: false}): BrokerError {
    const where = redactUrl(url);
    const code = err.code;
    if (typeof code === "number") return explainConnack(code, err.message, where);
    if (code === "ECONNREFUSED")
        return new BrokerError("broker_unreachable", `no MQTT broker is listening at ${where}: install one (sudo apt-get install mosquitto) or set mqtt.url to your broker`);
    if (code === "ENOTFOUND" || code === "EAI_AGAIN")
        return new BrokerError("broker_unreachable", `cannot resolve the broker host in ${where}: check mqtt.url and DNS`);
    if (code === "ETIMEDOUT" || code === "EHOSTUNREACH" || code === "ENETUNREACH")
        return new BrokerError("broker_unreachable", `cannot reach ${where} (${code}): check the network and mqtt.url`);
    if (code === "ECONNRESET" || code === "EPIPE")
        return new BrokerError("broker_unreachable", `the broker at ${where} closed the connection (${code}): it may be restarting, or the port ` +
            "speaks TLS and mqtt.url says mqtt:// (or the reverse: mqtts:// to a plain port)");
    if (typeof code === "string") {
        const tls = explainTls(code, where, context);
        if (tls) return tls;
    }
    return new BrokerError("broker_unreachable", `MQTT error at ${where}: ${err.message.split("\n")[0]}${code !== undefined ? ` (${code})` : ""}`);
}

function explainConnack(code: number, message: string, where: string): BrokerError {
    const refused = `the broker at ${where} refused the connection (CONNACK ${code}, ${message.replace(/^Connection refused: /, "")})`;
    if (code === 134 || code === 4) return new BrokerError("broker_auth", `${refused}: wrong username or password; check ${PASSWORD_HINT}`);
    if (code === 135 || code === 5)
        return new BrokerError("broker_auth", `${refused}: not authorized; check ${PASSWORD_HINT}, and that the broker's ACL lets this user in`);
    if (code === 138) return new BrokerError("broker_auth", `${refused}: this client is banned by the broker`);
    if (code === 133 || code === 2) return new BrokerError("broker_auth", `${refused}: the broker rejects the client id; check mqtt.clientId`);
    return new BrokerError("broker_unreachable", refused);
}

function explainTls(code: string, where: string, context: ConnectContext): BrokerError | null {
    const server = `the broker's certificate at ${where}`;
    if (code === "CERT_HAS_EXPIRED")
        return new BrokerError("broker_tls", `${server} has expired (${code}): renew it on the broker; verification is never skipped`);
    if (code === "CERT_NOT_YET_VALID")
        return new BrokerError("broker_tls", `${server} is not valid yet (${code}): check this device's clock (a Raspberry Pi has no RTC: is NTP synchronised?)`);
    if (code === "ERR_TLS_CERT_ALTNAME_INVALID")
        return new BrokerError("broker_tls", `${server} does not name the host in mqtt.url (${code}): use a host name or IP from its subjectAltName`);
    if (/SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|CERT_SIGNATURE_FAILURE|CERT_UNTRUSTED|CERT_REJECTED/.test(code))
        return new BrokerError("broker_tls", `${server} is not signed by ${context.ca ? "the CA in mqtt.ca" : "a trusted CA"} (${code}): ` +
            `${context.ca ? "set mqtt.ca to" : "set mqtt.ca to a PEM file of"} the CA that signed the broker's certificate`);
    if (/ALERT_CERTIFICATE_REQUIRED|ALERT_HANDSHAKE_FAILURE/.test(code) && !context.clientCert)
        return new BrokerError("broker_tls", `the broker at ${where} requires a client certificate (${code}): set mqtt.cert and mqtt.key`);
    if (/ALERT_(UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_UNKNOWN|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED|UNSUPPORTED_CERTIFICATE|DECRYPT_ERROR)/.test(code))
        return new BrokerError("broker_tls", `the broker at ${where} rejected our client certificate (${code}): check mqtt.cert and mqtt.key and the broker's cafile`);
    if (/CERT|ERR_TLS|ERR_SSL|EPROTO/.test(code))
        return new BrokerError("broker_tls", `TLS with ${where} failed (${code}): check mqtt.url (mqtts://), mqtt.ca, mqtt.cert and mqtt.key`);
    return null;
}
