/**
 * Error classes, one per concept. Each carries a stable `code`: the wire protocol, logs and callers
 * branch on the code, never on message text.
 */

/** Codes that may appear in an MQTT error reply (`{"status": "error", "error": {"code"}}`). */
export const WIRE_ERROR_CODES = [
    "invalid_json", "invalid_request", "invalid_encoding", "payload_too_large", "queue_full", "exceed_context_size",
    "model_unavailable", "cancelled", "timeout", "shutting_down", "paused", "duplicate_id", "unavailable", "internal"
] as const;

export type WireErrorCode = typeof WIRE_ERROR_CODES[number];

export class QwenEdgeError extends Error {
    public readonly code: string;
    public constructor(code: string, message: string, options?: {cause?: unknown}) {
        super(message, options);
        this.name = new.target.name;
        this.code = code;
    }
}

/** A request that cannot be served; `code` goes on the wire, `details` too (e.g. `retryAfterMs`). */
export class RequestError extends QwenEdgeError {
    public declare readonly code: WireErrorCode;
    public readonly details: Record<string, unknown>;
    public constructor(code: WireErrorCode, message: string, details: Record<string, unknown> = {}) {
        super(code, message);
        this.details = details;
    }
}

/** Configuration that cannot be used; the CLI exits with code 2. */
export class ConfigError extends QwenEdgeError {
    public constructor(message: string) {
        super("config_invalid", message);
    }
}

/** No model variant fits the memory budget; the CLI exits with code 3. */
export class NoModelFitsError extends QwenEdgeError {
    public constructor(message: string) {
        super("no_model_fits", message);
    }
}

/** A model file is missing, truncated, corrupt or cannot be fetched. */
export class ModelUnavailableError extends QwenEdgeError {
    public constructor(message: string, options?: {cause?: unknown}) {
        super("model_unavailable", message, options);
    }
}

/** Provisioning failed for want of disk space. */
export class NoSpaceError extends QwenEdgeError {
    public constructor(message: string) {
        super("no_space", message);
    }
}

/** A download's checksum did not match the expected one. */
export class ChecksumMismatchError extends QwenEdgeError {
    public constructor(message: string) {
        super("checksum_mismatch", message);
    }
}

/** The MQTT broker refused us or cannot be reached. */
export class BrokerError extends QwenEdgeError {
    public constructor(code: "broker_unreachable" | "broker_auth" | "broker_tls", message: string) {
        super(code, message);
    }
}

/**
 * Where describeError puts the stack of an expected error (a QwenEdgeError: offline, no model file,
 * disk full, ...): the logger shows it at debug level only. An unexpected error keeps `stack`.
 */
export const DEBUG_STACK: unique symbol = Symbol("qwen-edge.debugStack");

export interface DescribedError {
    message: string;
    code?: string;
    stack?: string;
    [DEBUG_STACK]?: string;
}

/** Turns anything thrown into `{message, code?, stack?}` so winston serializes it (an Error nests as `{}`). */
export function describeError(err: unknown): DescribedError {
    if (err instanceof Error) {
        const code = (err as {code?: unknown}).code;
        const stack = err.stack === undefined ? {} : err instanceof QwenEdgeError ? {[DEBUG_STACK]: err.stack} : {stack: err.stack};
        return {message: err.message, ...(typeof code === "string" ? {code} : {}), ...stack};
    }
    return {message: String(err)};
}

/** Longest reason in a status message, an error reply or Home Assistant's attributes; details stay in the log. */
export const REASON_MAX_CHARS = 300;

/** One line of at most `max` characters: line breaks and runs of spaces become one space, the rest is cut with "…". */
export function shortReason(text: string, max = REASON_MAX_CHARS): string {
    const line = text.replace(/\s+/g, " ").trim();
    return line.length <= max ? line : `${line.slice(0, max - 1).trimEnd()}…`;
}
