import { test, expect } from '../support/paylink';

// The operator logs into /admin with the admin token once (a form; a Secure, HttpOnly,
// SameSite=Strict cookie from then on) and reads the number of open links, which follows
// what merchants do.

const adminToken = process.env.PAYLINK_E2E_ADMIN_TOKEN ?? '';
const merchantKey = process.env.PAYLINK_E2E_DASHBOARD_API_KEY ?? '';
const merchantId = process.env.PAYLINK_E2E_DASHBOARD_MERCHANT ?? '';

test('an operator logs into the dashboard and reads the open-link count', async ({ page, request }) => {
  expect(adminToken, 'set PAYLINK_ADMIN_TOKEN to the running paylink\'s admin token').not.toBe('');
  const auth = { Authorization: `Bearer ${merchantKey}` };

  const first = await page.goto('/admin');
  expect(first?.status(), 'a browser without the cookie gets the login form').toBe(401);
  await page.getByLabel('Admin token').fill('not-the-token-at-all');
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page.getByTestId('login-error')).toBeVisible();

  await page.getByLabel('Admin token').fill(adminToken);
  await page.getByRole('button', { name: 'Log in' }).click();
  await expect(page.getByRole('heading', { name: 'paylink dashboard' })).toBeVisible();
  const cookie = (await page.context().cookies()).find((c) => c.name === 'paylink_admin');
  expect(cookie, 'the login sets the admin cookie').toBeDefined();
  expect(cookie).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Strict' });
  expect(cookie?.value).not.toContain(adminToken);

  const row = page.getByTestId(`active-${merchantId}`);
  const count = async () => Number((await row.textContent())?.trim());
  const before = await count();
  expect(Number.isInteger(before), `open links of ${merchantId} is a number`).toBe(true);

  const tokens: string[] = [];
  for (let i = 0; i < 3; i++) {
    const created = await request.post('/api/v1/sessions', {
      headers: auth,
      data: { orderId: `e2e-dashboard-${Date.now()}-${i}`, amount: 500, currency: 'EUR' },
    });
    expect(created.status()).toBe(201);
    tokens.push((await created.json()).token);
  }
  await page.reload();
  await expect(row).toHaveText(String(before + 3));

  expect((await request.delete(`/api/v1/sessions/${tokens[0]}`, { headers: auth })).status()).toBe(200);
  // The page refreshes itself (a meta refresh, no script): no reload needed.
  await expect(row).toHaveText(String(before + 2), { timeout: 12_000 });
  await expect(page.getByTestId('recent-events')).toContainText('session.revoked');
  await expect(page.getByTestId('store-health')).toContainText('healthy');

  for (const token of tokens.slice(1)) {
    await request.delete(`/api/v1/sessions/${token}`, { headers: auth });
  }
});
