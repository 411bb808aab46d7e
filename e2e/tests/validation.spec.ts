import {
  test,
  expect,
  CARDS,
  card,
  fillCard,
  openPayPage,
  pastExpiry,
  submitPayment,
  type Card,
} from '../support/paylink';
import type { Page } from '@playwright/test';

type Field = keyof Card;

/** The field is marked, and its message is visible and tied to the input for screen readers. */
async function expectMarked(page: Page, field: Field): Promise<string> {
  const wrapper = page.getByTestId(`field-${field}`);
  const input = page.locator(`#${field}`);
  const message = page.getByTestId(`error-${field}`);

  await expect(wrapper).toHaveClass(/(^|\s)field-invalid(\s|$)/);
  await expect(input).toHaveAttribute('aria-invalid', 'true');
  await expect(message).toBeVisible();
  const text = ((await message.textContent()) ?? '').trim();
  expect(text.length, `error-${field} has a message`).toBeGreaterThan(3);

  // aria-describedby names the message's id, and the browser's accessibility tree agrees.
  const describedBy = (await input.getAttribute('aria-describedby')) ?? '';
  const messageId = await message.getAttribute('id');
  expect(messageId, `error-${field} has an id`).toBeTruthy();
  expect(describedBy.split(/\s+/)).toContain(messageId);
  await expect(input).toHaveAccessibleDescription(text);

  // Readable: not hidden behind zero size, not transparent.
  const box = await message.boundingBox();
  expect(box && box.width > 0 && box.height > 0).toBe(true);
  const style = await message.evaluate((el) => {
    const s = getComputedStyle(el);
    return { fontSize: parseFloat(s.fontSize), opacity: Number(s.opacity), visibility: s.visibility };
  });
  expect(style.fontSize).toBeGreaterThanOrEqual(12);
  expect(style.opacity).toBe(1);
  expect(style.visibility).toBe('visible');
  return text;
}

async function expectUnmarked(page: Page, field: Field): Promise<void> {
  await expect(page.getByTestId(`field-${field}`)).not.toHaveClass(/(^|\s)field-invalid(\s|$)/);
  await expect(page.getByTestId(`error-${field}`)).toHaveCount(0);
  await expect(page.locator(`#${field}`)).not.toHaveAttribute('aria-invalid', 'true');
}

test('a card number failing the Luhn check is marked with a readable message', async ({ page, merchant }) => {
  const link = await merchant.createLink();
  await openPayPage(page, link);
  await fillCard(page, card('4242 4242 4242 4241'));

  const response = await submitPayment(page, link);
  expect(response.status(), 'an invalid form answers 422').toBe(422);
  await expect(page.getByTestId('form-error')).toBeVisible();
  await expectMarked(page, 'cardNumber');
  for (const field of ['cardholderName', 'expiry', 'cvc'] as const) await expectUnmarked(page, field);
  // The rejected number is not echoed back.
  await expect(page.locator('#cardNumber')).toHaveValue('');
  await expect(page.locator('body')).not.toContainText('4242 4242 4242 4241');
  expect((await merchant.session(link.token)).status).toBe('open');
});

test('a past expiry date and a missing CVC are each marked; fixing them pays', async ({ page, merchant }) => {
  const link = await merchant.createLink();
  await openPayPage(page, link);
  await fillCard(page, card(CARDS.approved, { expiry: pastExpiry(), cvc: '' }));

  const response = await submitPayment(page, link);
  expect(response.status()).toBe(422);
  await expectMarked(page, 'expiry');
  await expectMarked(page, 'cvc');
  await expectUnmarked(page, 'cardNumber');
  await expectUnmarked(page, 'cardholderName');

  // The link is still open: correct the form and pay.
  await fillCard(page, card(CARDS.approved));
  const paid = await submitPayment(page, link);
  expect(paid.status()).toBe(200);
  await expect(page.getByTestId('receipt-title')).toHaveText('Payment successful');
});

test('an empty form marks every field', async ({ page, merchant }) => {
  const link = await merchant.createLink();
  await openPayPage(page, link);

  const response = await submitPayment(page, link);
  expect(response.status()).toBe(422);
  for (const field of ['cardholderName', 'cardNumber', 'expiry', 'cvc'] as const) await expectMarked(page, field);
});

test('a malformed expiry is marked', async ({ page, merchant }) => {
  const link = await merchant.createLink();
  await openPayPage(page, link);
  await fillCard(page, card(CARDS.approved, { expiry: '13/99' }));

  expect((await submitPayment(page, link)).status()).toBe(422);
  await expectMarked(page, 'expiry');
  await expectUnmarked(page, 'cardNumber');
});
