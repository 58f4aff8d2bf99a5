// A real OpenID provider for jit-ssh's integration tests: oidc-provider (the certified
// Node.js implementation) with one confidential client, "jit-ssh".
//
//   node provider.mjs --port P --client-secret-file F --redirect-uri URI [--redirect-uri URI2]
//                     [--accounts accounts.json] [--host 127.0.0.1|::1]
//                     [--token-endpoint-auth-method client_secret_basic|client_secret_post]
//                     [--auto-consent]
//
// Issuer: http://127.0.0.1:P (exactly, no trailing slash; http://[::1]:P with --host ::1). The login page is oidc-provider's
// own development login ("devInteractions"): the login name picks the account, any password
// is accepted; a name that is not an account goes back to the login page. Then its own consent
// page asks to grant the jit-ssh client the scopes it asked for (once per browser session);
// with --auto-consent the grant is given without asking.
//
// Accounts are read from the --accounts JSON file on every lookup, so a test can change a
// person's groups at the provider and the next sign-in sees it. Without --accounts: alice
// (engineers) and bob (approvers), the groups of policies/demo.toml.
//
// Prints "ready http://127.0.0.1:P" on stdout once it listens; exits 0 on SIGTERM/SIGINT.
// For tests on 127.0.0.1 only: the signing keys are made at start and never stored.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const CLIENT_ID = 'jit-ssh';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const AUTH_METHODS = new Set(['client_secret_basic', 'client_secret_post']);
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1']);

const DEFAULT_ACCOUNTS = {
  alice: {
    email: 'alice@example.com',
    email_verified: true,
    groups: ['engineers'],
    preferred_username: 'alice',
    name: 'Alice Example',
  },
  bob: {
    email: 'bob@example.com',
    email_verified: true,
    groups: ['approvers'],
    preferred_username: 'bob',
    name: 'Bob Example',
  },
};

// The claims of an account the provider may release, by name (anything else in the file is
// ignored rather than passed through).
const ACCOUNT_CLAIMS = ['email', 'email_verified', 'preferred_username', 'name', 'groups'];

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

function parseOptions(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        port: { type: 'string' },
        host: { type: 'string', default: '127.0.0.1' },
        'client-secret-file': { type: 'string' },
        'redirect-uri': { type: 'string', multiple: true },
        accounts: { type: 'string' },
        'token-endpoint-auth-method': { type: 'string', default: 'client_secret_basic' },
        'auto-consent': { type: 'boolean', default: false },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    fail(err.message);
  }
  const v = parsed.values;
  const port = Number(v.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) fail('--port must be a TCP port number');
  if (!LOOPBACK_HOSTS.has(v.host)) fail('--host must be a loopback address (tests only)');
  if (!v['client-secret-file']) fail('--client-secret-file is required');
  if (!v['redirect-uri'] || v['redirect-uri'].length === 0) fail('--redirect-uri is required');
  if (!AUTH_METHODS.has(v['token-endpoint-auth-method'])) {
    fail('--token-endpoint-auth-method must be client_secret_basic or client_secret_post');
  }
  let secret;
  try {
    secret = readFileSync(v['client-secret-file'], 'utf8').trim();
  } catch (err) {
    fail(`cannot read --client-secret-file: ${err.message}`);
  }
  if (secret.length < 16) fail('the client secret must be at least 16 characters');
  return {
    port,
    host: v.host,
    secret,
    redirectUris: v['redirect-uri'],
    accountsFile: v.accounts,
    authMethod: v['token-endpoint-auth-method'],
    autoConsent: v['auto-consent'],
  };
}

function loadAccounts(file) {
  if (!file) return DEFAULT_ACCOUNTS;
  // Read on every call: the test rewrites the file to change a person at the provider.
  // A broken file means no accounts (every sign-in fails) rather than a crash.
  try {
    const data = JSON.parse(readFileSync(file, 'utf8'));
    if (data === null || typeof data !== 'object' || Array.isArray(data)) return {};
    return data;
  } catch (err) {
    process.stderr.write(`provider.mjs: cannot read --accounts ${file}: ${err.message}\n`);
    return {};
  }
}

function signingKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({
    format: 'jwk',
  });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({
    format: 'jwk',
  });
  return [
    // The first key of an algorithm signs: ID tokens are RS256 (the client's default).
    { ...rsa, kid: `rsa-${randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' },
    { ...ec, kid: `ec-${randomBytes(6).toString('hex')}`, alg: 'ES256', use: 'sig' },
  ];
}

const options = parseOptions(process.argv.slice(2));
const issuer = options.host === '::1'
  ? `http://[::1]:${options.port}`
  : `http://127.0.0.1:${options.port}`;

// oidc-provider warns on stderr that it prefers Node.js 22 LTS; Debian's Node.js 20 runs
// it fine for a test provider, and the warning goes to the fixture's log file.
const { default: Provider, interactionPolicy } = await import('oidc-provider');

async function findAccount(ctx, sub) {
  const accounts = loadAccounts(options.accountsFile);
  if (!Object.hasOwn(accounts, sub)) return undefined;
  const record = accounts[sub];
  if (record === null || typeof record !== 'object') return undefined;
  return {
    accountId: sub,
    async claims() {
      // Read again: the claims reflect the file at the moment the token is made.
      const now = loadAccounts(options.accountsFile)[sub] ?? {};
      const claims = { sub };
      for (const name of ACCOUNT_CLAIMS) {
        if (Object.hasOwn(now, name)) claims[name] = now[name];
      }
      // Any extra claim the test put under "extra" is released as is (to test refusals of
      // odd claim values).
      if (now.extra && typeof now.extra === 'object') Object.assign(claims, now.extra);
      return claims;
    },
  };
}

const ALL_SCOPES = 'openid email profile groups';

// With --auto-consent: consent is automatic for the jit-ssh client, a grant of every scope it
// may ask for. Without it the provider's consent page asks.
async function loadExistingGrant(ctx) {
  const { client, session } = ctx.oidc;
  const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
  let grant;
  if (grantId) grant = await ctx.oidc.provider.Grant.find(grantId);
  if (!grant && client.clientId === CLIENT_ID && session.accountId) {
    grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
  }
  if (grant && client.clientId === CLIENT_ID) {
    grant.addOIDCScope(ALL_SCOPES);
    await grant.save();
  }
  return grant;
}

// The development login takes any name as the account id. A name with no account goes
// back to the login page (rather than on to consent, which has no account to grant).
const policy = interactionPolicy.base();
policy.get('login').checks.push(
  new interactionPolicy.Check('no_account', 'the login name has no account', (ctx) =>
    ctx.oidc.session.accountId && !ctx.oidc.account
      ? interactionPolicy.Check.REQUEST_PROMPT
      : interactionPolicy.Check.NO_NEED_TO_PROMPT),
);

const configuration = {
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: options.secret,
      client_name: 'jit-ssh',
      redirect_uris: options.redirectUris,
      grant_types: ['authorization_code', DEVICE_GRANT],
      response_types: ['code'],
      token_endpoint_auth_method: options.authMethod,
      id_token_signed_response_alg: 'RS256',
    },
  ],
  clientAuthMethods: [options.authMethod],
  jwks: { keys: signingKeys() },
  findAccount,
  ...(options.autoConsent ? { loadExistingGrant } : {}),
  interactions: { policy },
  // "groups" has a scope of its own (as Okta's), and comes with "profile" too: jit-ssh's
  // default scopes (openid email profile) then get the groups without any configuration.
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name', 'groups'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  // The claims of the granted scopes go into the ID token, as most company providers do (and
  // as jit-ssh reads them), not only into the userinfo answer.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
  },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    DeviceCode: 600,
    Grant: 3600,
    IdToken: 600,
    Interaction: 600,
    Session: 3600,
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    const text = Object.entries(out)
      .map(([k, v]) => `<p><strong>${k}</strong>: <span class="${k}">${String(v).replace(/[<>&"]/g, '')}</span></p>`)
      .join('');
    ctx.body = `<!DOCTYPE html><html><head><title>oidc error</title></head><body><h1>error</h1>${text}</body></html>`;
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, err) => {
  process.stderr.write(`provider.mjs: server_error: ${err.stack || err}\n`);
});

const server = createServer(provider.callback());
server.on('error', (err) => {
  process.stderr.write(`provider.mjs: ${err.message}\n`);
  process.exit(err.code === 'EADDRINUSE' ? 3 : 1);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  // A connection that will not close must not keep the test waiting.
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.listen(options.port, options.host, () => {
  process.stdout.write(`ready ${issuer}\n`);
});
