-- One row per company (by web domain): product usage rolled up for the sales team.
select
    company_domain as domain,
    any_value(company_name) as name,
    count(*) as customers_count,
    sum(lifetime_value) as lifetime_value,
    sum(logins_count) as logins_count,
    sum(reports_count) as reports_count,
    sum(exports_count) as exports_count
from {{ ref('customer_traits') }}
group by company_domain
