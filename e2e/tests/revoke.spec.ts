import { test, expect, card, expectLinkExpired, fillCard, openPayPage, submitPayment } from '../support/paylink';

test('the merchant revokes the link while the page is open: submitting gives "Link Expired"', async ({
  page,
  merchant,
}) => {
  const link = await merchant.createLink();
  await openPayPage(page, link);
  await fillCard(page, card());

  const revoked = await merchant.revoke(link.token);
  expect(revoked.status()).toBe(200);
  expect(await revoked.json()).toMatchObject({ status: 'revoked' });

  // The open page knows nothing yet; the server refuses the payment.
  await expect(page.getByTestId('pay-button')).toBeEnabled();
  const response = await submitPayment(page, link);
  await expectLinkExpired(page, response);

  const session = await merchant.session(link.token);
  expect(session.status).toBe('revoked');
  expect(session.revokedAt).toBeTruthy();
  expect(session.paidAt).toBeUndefined();
  expect(session.cardLast4).toBeUndefined();

  // Revoking again: the session has ended.
  const again = await merchant.revoke(link.token);
  expect(again.status()).toBe(409);
  expect(await again.json()).toMatchObject({ error: { code: 'not_open' } });

  // And reopening the link: gone at once.
  await expectLinkExpired(page, await page.goto(link.path));
});
