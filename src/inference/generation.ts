/**
 * What to generate, in one shape from the wire to the engine: the protocol validates these fields
 * (src/mqtt/request-fields.ts), the job store keeps them, the engine reads them. Pure types and rules.
 */

export interface ChatMessage {
    role: "system" | "user" | "assistant" | "tool";
    content: string;
    /** an assistant turn a conversation kept (src/jobs/conversations.ts): its thought text; never from the wire */
    thinking?: string;
    /** an assistant turn that called tools (the calls a reply's toolCalls gave) */
    toolCalls?: ToolCall[];
    /** a "tool" message: the call whose result `content` is */
    toolCallId?: string;
}

/** A tool the model may call: a client's (`tools`), or a device action granted to the request. */
export interface ToolDefinition {
    name: string;
    description?: string;
    /** JSON Schema of the arguments, in the subset generation can be constrained to (src/actions/schema.ts) */
    parameters?: object;
}

/** A call the model made: its id (for the result that answers it), the tool, the arguments. */
export interface ToolCall {
    id: string;
    name: string;
    arguments: unknown;
    /** set when the arguments break a rule of the schema the grammar cannot enforce (minimum, maximum): what is wrong */
    error?: string;
}

/** false: no thinking; true: thinking with the default budget; {budget}: at most that many thought tokens. */
export type ThinkingSetting = false | true | {budget: number};

export interface GenerationOptions {
    /** the user prompt; or `messages` */
    prompt?: string;
    messages?: ChatMessage[];
    /** system prompt; the device's default when absent (and no system message) */
    system?: string;
    maxTokens: number;
    temperature?: number;
    topP?: number;
    topK?: number;
    minP?: number;
    seed?: number;
    stop?: string[];
    /** constrain the answer to this JSON Schema */
    jsonSchema?: object;
    /** the client's tools: a call to one ends the generation (finishReason tool_calls) */
    tools?: ToolDefinition[];
    thinking: ThinkingSetting;
}

/** `thinking: true` thinks for at most this share of maxTokens: unbounded thoughts wreck small models. */
export const DEFAULT_THOUGHT_SHARE = 0.5;

/** The thought budget in tokens, or false for no thinking. */
export function thoughtBudget(thinking: ThinkingSetting, maxTokens: number): false | number {
    if (thinking === false) return false;
    return thinking === true ? Math.floor(maxTokens * DEFAULT_THOUGHT_SHARE) : thinking.budget;
}
