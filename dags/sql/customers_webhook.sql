-- Everything the CRM webhook wants about a customer, keyed by the warehouse id.
select
    customer_id,
    email,
    first_name || ' ' || last_name as name,
    plan,
    lifetime_value,
    orders_count
from customers
