import {
  test,
  expect,
  card,
  expectLinkExpired,
  fillCard,
  openPayPage,
  waitUntilPast,
} from '../support/paylink';

// Real expiry: links with a 3 s TTL (the suite's server runs with PAYLINK_MIN_TTL_SECONDS=1),
// waited out on the clock, no time travel. Generous timeouts: the machine may be busy.
const TTL_SECONDS = 3;
// The countdown test fills the card form before the link runs out: on a busy 2-core CI
// runner that alone once took longer than 3 s, so its link lives longer.
const FORM_TTL_SECONDS = 8;

test.describe('expiry', () => {
  test.describe.configure({ timeout: 60_000 });

  test('a link opened, waited out and reloaded shows "Link Expired"', async ({ page, merchant }) => {
    const link = await merchant.createLink({ ttlSeconds: TTL_SECONDS });
    expect(Date.parse(link.expiresAt) - Date.parse(link.createdAt)).toBe(TTL_SECONDS * 1000);

    await openPayPage(page, link);
    await waitUntilPast(link.expiresAt);

    // The TTL has run out: the very next request is refused, no grace period.
    const response = await page.reload();
    await expectLinkExpired(page, response);
    expect((await merchant.session(link.token)).status).toBe('expired');
  });

  test('the countdown reaching zero turns the open page into an expired page without a reload', async ({
    page,
    merchant,
  }) => {
    const link = await merchant.createLink({ ttlSeconds: FORM_TTL_SECONDS });
    await openPayPage(page, link);
    // Marks this document: a reload or navigation would lose the mark.
    await page.evaluate(() => ((window as unknown as { paylinkE2eMark: number }).paylinkE2eMark = 42));

    await expect(page.getByTestId('expired-message')).toBeHidden();
    await expect(page.getByTestId('pay-button')).toBeEnabled();
    await fillCard(page, card());

    await expect(page.getByTestId('countdown')).toHaveText('Expired', { timeout: (FORM_TTL_SECONDS + 10) * 1000 });
    await expect(page.getByTestId('expired-message')).toBeVisible();
    await expect(page.getByTestId('expired-message')).toContainText('This link has expired');
    await expect(page.getByTestId('pay-button')).toBeDisabled();
    expect(await page.evaluate(() => (window as unknown as { paylinkE2eMark?: number }).paylinkE2eMark)).toBe(42);
    expect(page.url()).toContain(link.path);

    // Enter in a field (implicit submission) must not slip a payment through either.
    const posts: string[] = [];
    page.on('request', (r) => {
      if (r.method() === 'POST') posts.push(r.url());
    });
    await page.locator('#cvc').press('Enter');
    await page.waitForTimeout(500); // a negative check: give a wrong submission time to start
    expect(posts, 'no POST after expiry').toEqual([]);
    expect(await page.evaluate(() => (window as unknown as { paylinkE2eMark?: number }).paylinkE2eMark)).toBe(42);

    // And the server agrees with the page.
    await waitUntilPast(link.expiresAt);
    expect((await merchant.session(link.token)).status).toBe('expired');
  });

  test('a payment submitted after the TTL ran out is refused with "Link Expired"', async ({ browser, merchant }) => {
    // Without JavaScript nothing disables the button, so only the server stands in the way.
    const context = await browser.newContext({ javaScriptEnabled: false });
    const page = await context.newPage();
    try {
      const link = await merchant.createLink({ ttlSeconds: TTL_SECONDS });
      await openPayPage(page, link);
      await fillCard(page, card());
      await waitUntilPast(link.expiresAt);

      const posted = page.waitForResponse((r) => r.request().method() === 'POST');
      await page.getByTestId('pay-button').click();
      const response = await posted;
      await expectLinkExpired(page, response);
      const session = await merchant.session(link.token);
      expect(session.status).toBe('expired');
      expect(session.paidAt).toBeUndefined();
    } finally {
      await context.close();
    }
  });
});
