-- One "repurchase_due" event per customer and last order: the event key is stable, so a
-- re-run (or a retry) of the sync recognises it and the customer gets the nudge once.
select
    customer_id || ':' || strftime(last_order_date, '%Y-%m-%d') as event_key,
    customer_id,
    email,
    'repurchase_due' as event_name,
    cast(last_order_date + interval '{{ var("repurchase_after_days") }} days' as timestamp) as due_at,
    last_order_date,
    orders_count,
    lifetime_value
from {{ ref('customer_traits') }}
where repurchase_due
