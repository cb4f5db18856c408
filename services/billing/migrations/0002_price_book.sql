-- The versioned price book (DESIGN §8). A price is the exact fraction
--   price_micros micro-USD per per_units units of the meter's base unit,
-- never a float. A quantity q at a price costs round_half_up(q * price_micros / per_units)
-- micro-USD per line (computed in 128-bit integers by nf-billing, usage.c); totals add
-- rounded lines. The price applying to an hour is the row with the latest
-- effective_from <= that hour.
CREATE TABLE billing.price_book (
    meter          text NOT NULL
                   CHECK (meter IN ('gpu_ms', 'input_tokens', 'output_tokens',
                                    'storage_byte_hours')),
    unit           text NOT NULL,   -- what price_micros buys, for people
    price_micros   bigint NOT NULL CHECK (price_micros >= 0),
    per_units      bigint NOT NULL CHECK (per_units > 0),
    effective_from timestamptz NOT NULL,
    PRIMARY KEY (meter, effective_from)
);

-- Product overview prices. GB = 1e9 bytes, month = 730 hours, so a GB-month is
-- 730,000,000,000 byte-hours. Must match BILL_*_RATE in bill.h.
INSERT INTO billing.price_book (meter, unit, price_micros, per_units, effective_from) VALUES
    ('gpu_ms',             'GPU hour',          2500000,      3600000, '1970-01-01T00:00:00Z'),
    ('input_tokens',       '1M input tokens',  10000000,      1000000, '1970-01-01T00:00:00Z'),
    ('output_tokens',      '1M output tokens', 30000000,      1000000, '1970-01-01T00:00:00Z'),
    ('storage_byte_hours', 'GB-month',            20000, 730000000000, '1970-01-01T00:00:00Z');
