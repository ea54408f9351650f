-- One row per customer: the traits the sales, marketing and support syncs send.
with as_of as (
    select cast('{{ var("as_of_date") }}' as date) as as_of_date
),

orders as (
    select
        customer_id,
        count(*) as orders_count,
        sum(amount) as lifetime_value,
        max(ordered_at) as last_order_date
    from {{ ref('raw_orders') }}
    where status = 'completed'
    group by customer_id
),

usage as (
    select
        customer_id,
        count(*) filter (where event_name = 'login') as logins_count,
        count(*) filter (where event_name = 'report_run') as reports_count,
        count(*) filter (where event_name = 'export') as exports_count,
        max(occurred_at) as last_seen_at
    from {{ ref('raw_product_events') }}
    group by customer_id
)

select
    c.customer_id,
    lower(c.email) as email,
    c.first_name,
    c.last_name,
    c.company_name,
    c.company_domain,
    nullif(c.phone, '') as phone,
    c.plan,
    c.language as preferred_language,
    coalesce(o.orders_count, 0) as orders_count,
    coalesce(o.lifetime_value, 0) as lifetime_value,
    o.last_order_date,
    coalesce(
        o.last_order_date between a.as_of_date - ({{ var("repurchase_after_days") }} + {{ var("repurchase_window_days") }})
                              and a.as_of_date - ({{ var("repurchase_after_days") }} - {{ var("repurchase_window_days") }}),
        false
    ) as repurchase_due,
    coalesce(u.logins_count, 0) as logins_count,
    coalesce(u.reports_count, 0) as reports_count,
    coalesce(u.exports_count, 0) as exports_count,
    u.last_seen_at
from {{ ref('raw_customers') }} as c
cross join as_of as a
left join orders as o using (customer_id)
left join usage as u using (customer_id)
