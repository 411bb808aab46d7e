import { randomBytes } from 'node:crypto';
import { test, expect, expectLinkExpired } from '../support/paylink';

// Anything that is not an open link is "Link Expired" with 410, whatever is wrong with it.

test('an unknown token shows "Link Expired" with 410', async ({ page }) => {
  const unknown = randomBytes(32).toString('hex');
  const response = await page.goto(`/pay/${unknown}`);
  await expectLinkExpired(page, response);
  await expect(page).toHaveTitle(/Link Expired/);
  await expect(page.getByTestId('gone-reason')).toBeVisible();
  expect((await response!.allHeaders())['cache-control']).toContain('no-store');
});

const malformed: Array<[string, string]> = [
  ['too short', 'abc123'],
  ['63 hex characters', 'a'.repeat(63)],
  ['65 hex characters', 'b'.repeat(65)],
  ['upper-case hex', randomBytes(32).toString('hex').toUpperCase()],
  ['not hex', 'z'.repeat(64)],
  ['punctuation', 'not-a-token'],
  ['a JWT-looking string', 'eyJhbGciOiJIUzI1NiJ9.eyJvcmRlcklkIjoiMSJ9.c2lnbmF0dXJl'],
  ['percent-encoded junk', '%00%27%22%3Cscript%3E'],
];

for (const [what, token] of malformed) {
  test(`a malformed token (${what}) shows "Link Expired" with 410`, async ({ page }) => {
    const response = await page.goto(`/pay/${token}`);
    await expectLinkExpired(page, response);
  });
}

test('posting a card to an unknown link is refused with "Link Expired"', async ({ request }) => {
  // No page can show a form for an unknown link, so this one goes straight to the server.
  const response = await request.post(`/pay/${randomBytes(32).toString('hex')}`, {
    form: { cardholderName: 'Ada Lovelace', cardNumber: '4242 4242 4242 4242', expiry: '12/40', cvc: '123' },
  });
  expect(response.status()).toBe(410);
  expect(await response.text()).toContain('Link Expired');
});
