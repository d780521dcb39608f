% rebase('base', title='Your gallery')
<div class="page-head">
  <h1>Your generations</h1>
  <p class="counts"{{'' if pg.total else ' hidden'}}><span data-count="total">{{pg.total}}</span> in all: <span data-count="Completed">{{pg.counts.get('Completed', 0)}}</span> completed,
    <span data-count="Processing">{{pg.counts.get('Processing', 0)}}</span> processing, <span data-count="Failed">{{pg.counts.get('Failed', 0)}}</span> failed. Newest first.</p>
</div>
<div class="gen-list" data-live-list data-page="{{pg.page}}">
% if not pg.generations:
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
  <a href="/?page={{pg.page - 1}}" rel="prev">← Newer</a>
  % end
  <span>Page {{pg.page}} of {{pg.pages}}</span>
  % if pg.page < pg.pages:
  <a href="/?page={{pg.page + 1}}" rel="next">Older →</a>
  % end
</nav>
% end
