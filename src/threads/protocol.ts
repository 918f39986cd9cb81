/**
 * The shape of a worker thread's typed protocol, shared by its two halves (client.ts on the
 * main thread, server.ts in the worker): each operation names what is sent and what comes back.
 *
 *     type FileProtocol = { write: { request: { tmp: string; path: string; chunks: Buffer[] }; reply: void }; ... };
 */
export type Protocol<P> = { [K in keyof P]: { request: unknown; reply: unknown } };

export type Op<P> = keyof P & string;
export type RequestOf<P, K extends Op<P>> = P[K] extends { request: infer Q } ? Q : never;
export type ReplyOf<P, K extends Op<P>> = P[K] extends { reply: infer R } ? R : never;

/** A request as the worker receives it; a union over the operations, so `switch (req.op)` narrows `body`. Id 0: nobody waits for a reply. */
export type Request<P> = { [K in Op<P>]: { readonly id: number; readonly op: K; readonly body: RequestOf<P, K> } }[Op<P>];

/** An error as plain data, its fields copied onto the Error the waiter gets: structured cloning would keep only an Error's message (and stack). */
export interface ErrorData {
  readonly message: string;
}

export type Reply = { readonly id: number; readonly value: unknown } | { readonly id: number; readonly error: ErrorData };

/** Main thread → worker, in batches (PostBatch): requests, or the request to finish and exit. */
export type ToWorker<P> = Request<P> | { readonly close: true };

/** Worker → main thread: 'ready' once loaded, then batches of replies, each with the worker's status of the moment. */
export type FromWorker<S> = 'ready' | { readonly replies: Reply[]; readonly status: S };
