import { KEY_FILE_ENV } from '../config/secret-key.js';

// Every command's usage in one module that loads nothing heavy: `sendas` with a typo, or --help,
// prints them without loading the relay, and each command's own errors quote its part.

export const DKIM_USAGE = `  dkim     keygen --domain DOMAIN --selector NAME [--type rsa|ed25519] [--bits 2048] [--out FILE]
                                          write a DKIM private key (0600, default DOMAIN.NAME.key); print the
                                          DNS TXT record to publish and the dkim: entry for relay.yaml`;

export const OAUTH_USAGE = `  oauth    login --config FILE --account NAME [--flow device|browser] [--open-timeout SECONDS]
                                          sign an xoauth2 account (grant refresh_token) in; store its refresh token`;

export const QUEUE_USAGE = `  queue list   [--failed]               the queue as a table (--failed: the failed area)
  queue show   ID                       one message: envelope, identity, every recipient's state and reason
  queue retry  ID | --all               try now (a failed message goes back into the queue)
  queue delete ID                       remove a message (queued or failed)`;

export const SECRET_USAGE = `  secret   keygen [--out FILE]            write a new age key file (0600, never over an existing file); print its
                                          recipient (age1…). FILE defaults to the key the config names
  secret   encrypt [--recipient age1… | --key FILE]
                                          read a secret from stdin (or a prompt that does not echo), print the
                                          {age: …} value to paste after password: (or any secret key); the key
                                          defaults to the config's (secrets.key_file, $${KEY_FILE_ENV})`;

export const STATUS_USAGE = `  status   --cluster --config FILE [--json] [--url http://HOST:PORT]
                                          the replicas sharing cluster.redis, read from Redis (works while this
                                          host's relay is down): node, version, config version, queue depth, last
                                          heartbeat; --url: as that relay's /status has them (http.token of FILE),
                                          also while Redis is down; exit 1 when that can't be reached`;

export const TEST_USAGE = `  test     --config FILE (--server NAME | --channel NAME | --agent NAME) [--to ADDR]
                                          sign in upstream with that account (and send a test message to ADDR)`;

export const TRACE_USAGE = `  trace    ADDRESS|MESSAGE-ID|QUEUE-ID --config FILE [--json] [--limit N]
                                          what became of a message (also long delivered): every event from the
                                          delivery history and the outcome per recipient; exit 1 when nothing is found`;

export const USAGE = `usage: sendas <command> [options]

commands:
  serve    --config FILE                  run the relay (SIGTERM/SIGINT: 421 to new sessions, running deliveries
                                          get 5 s, the rest stays queued)
  check    --config FILE                  validate the file; list servers with the channels and agents using them
  check    --config FILE --dns [--dns-server IP[:PORT]] [--json]
                                          look up each From domain's SPF, DKIM and DMARC per server: would the
                                          mail pass DMARC, and the records to add (exit 4: some would fail,
                                          5: some could not be looked up)
  explain  --config FILE --from ADDR [--envelope ADDR] [--login USER]
                                          show who would send a message, with which account and From; no network
${QUEUE_USAGE}
${TEST_USAGE}
${OAUTH_USAGE}
${DKIM_USAGE}
${TRACE_USAGE}
${SECRET_USAGE}
${STATUS_USAGE}

--config defaults to $SENDAS_CONFIG.`;
