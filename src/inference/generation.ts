/**
 * What to generate, in one shape from the wire to the engine: the protocol validates these fields
 * (src/mqtt/request-fields.ts), the job store keeps them, the engine reads them. Pure types and rules.
 */

export interface ChatMessage {
    role: "system" | "user" | "assistant";
    content: string;
    /** an assistant turn a conversation kept (src/jobs/conversations.ts): its thought text; never from the wire */
    thinking?: string;
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
    thinking: ThinkingSetting;
}

/** `thinking: true` thinks for at most this share of maxTokens: unbounded thoughts wreck small models. */
export const DEFAULT_THOUGHT_SHARE = 0.5;

/** The thought budget in tokens, or false for no thinking. */
export function thoughtBudget(thinking: ThinkingSetting, maxTokens: number): false | number {
    if (thinking === false) return false;
    return thinking === true ? Math.floor(maxTokens * DEFAULT_THOUGHT_SHARE) : thinking.budget;
}
