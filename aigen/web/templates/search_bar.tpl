%# Above the gallery's list: a notice, the New button, the search, and what the search found.
% if notice:
<p class="notice" role="status">{{notice}}</p>
% end
<p class="page-actions"><a class="button" href="/new">New generation</a></p>
% include('search', filters=filters, providers=providers)
% if filters.active:
<p class="counts" role="status">{{pg.matched}} match{{'' if pg.matched == 1 else 'es'}}{{', oldest first' if filters.order == 'oldest' else ''}}.</p>
% end
