% rebase('base', title='Your gallery')
<div class="page-head">
  <h1>Your generations</h1>
  <p class="counts"{{'' if pg.total else ' hidden'}}><span data-count="total">{{pg.total}}</span> in all: <span data-count="Completed">{{pg.counts.get('Completed', 0)}}</span> completed,
    <span data-count="Processing">{{pg.counts.get('Processing', 0)}}</span> processing, <span data-count="Failed">{{pg.counts.get('Failed', 0)}}</span> failed.</p>
  % include('search_bar', pg=pg, filters=filters, providers=providers, notice=notice)
</div>
<div class="gen-list" data-live-list data-page="{{pg.page}}">
% if not pg.generations and filters.active:
<section class="empty">
  <h2>Nothing matches</h2>
  <p>No generation of yours matches this search. <a href="/">Show them all</a>.</p>
</section>
% elif not pg.generations:
<section class="empty">
  <h2>Nothing here yet</h2>
  <p>Make your first 5 videos and 5 images with:</p>
  <pre><code>aigen generate "a red fox at dawn in a misty forest" --user {{user}}</code></pre>
  <p>They show up on this page as soon as the work starts, and play here when they are ready.</p>
</section>
% end
% for html in sections:
{{!html}}
% end
</div>
% if pg.pages > 1:
<nav class="pager" aria-label="Pages">
  % if pg.page > 1:
  <a href="{{pg.url(pg.page - 1)}}" rel="prev">← Previous</a>
  % end
  <span>Page {{pg.page}} of {{pg.pages}}</span>
  % if pg.page < pg.pages:
  <a href="{{pg.url(pg.page + 1)}}" rel="next">Next →</a>
  % end
</nav>
% end
